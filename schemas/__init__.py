"""Event contracts: one definition per event type, validated at the edge."""
