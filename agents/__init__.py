"""One module per domain: the agents (thin `async for` loops) and the rules they apply."""
