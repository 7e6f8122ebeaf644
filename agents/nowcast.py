"""Flood nowcast: a monitored point's depth 15, 30 and 60 minutes ahead, when it will reach each
line, and a CAP warning before it crosses the closure line.

The model is one line a person can check: the depth moves at

    rate (cm/h) = trend_weight x the recent rise + (1 - trend_weight) x (cm_per_mm x rain - drain)

where the rain is the worst hourly total of the point's zone (mm/h), `cm_per_mm` is how much the
point's water rises per mm of rain and `drain` how fast it drains once the rain stops. Both are
learned from the point's own accepted readings (a moving average, `learning_rate` a reading),
starting from the settings for a point with no history. The waterlogging stage runs it
(agents/waterlogging.py): at each accepted reading and each change of its zone's rain.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agents.flood import LEVELS, POINT_RADIUS_KM, SEVERITY, rank
from schemas.cap import Alert, Incident, MsgType, ResponseType, bilingual, cap_id, cap_time, circle_area
from schemas.reference import WaterloggingPoint
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class Response:
    """How a point answers rain, learned from its own readings."""

    cm_per_mm: float
    drain_cm_h: float
    readings: int = 0  # the readings it was learned from

    @classmethod
    def initial(cls, s: Settings) -> Response:
        return cls(s.nowcast.response_cm_per_mm, s.nowcast.drain_cm_h)


def learn(response: Response, rate_cm_h: float, rain_mm_h: float, depth_cm: float, s: Settings) -> Response:
    """The response once one more rate of change was seen: under rain, the rise per mm (with the
    drainage it overcame); without, the drainage of standing water. Nothing else teaches."""
    n, a = s.nowcast, s.nowcast.learning_rate
    if rain_mm_h >= n.rain_min_mm_h:
        seen = max(0.0, (rate_cm_h + response.drain_cm_h) / rain_mm_h)
        return replace(response, cm_per_mm=response.cm_per_mm + a * (seen - response.cm_per_mm), readings=response.readings + 1)
    if depth_cm > 0 and rate_cm_h < 0:
        return replace(response, drain_cm_h=response.drain_cm_h + a * (-rate_cm_h - response.drain_cm_h),
                       readings=response.readings + 1)
    return response


def trend_cm_h(history: list[tuple[float, float]]) -> float:
    """The recent rise, cm/h, over the accepted readings kept (none over less than 5 minutes)."""
    if len(history) < 2 or history[-1][0] - history[0][0] < 300:
        return 0.0
    return (history[-1][1] - history[0][1]) / (history[-1][0] - history[0][0]) * 3600


def rate_of(response: Response, trend_cm_h: float, rain_mm_h: float, s: Settings) -> float:
    """The forecast rate of change of depth, cm/h."""
    w = s.nowcast.trend_weight
    return w * trend_cm_h + (1 - w) * (response.cm_per_mm * rain_mm_h - response.drain_cm_h)


@dataclass(frozen=True, slots=True)
class Forecast:
    at: float
    depths_cm: list[float]  # at each horizon
    crossings: list[tuple[str, float]]  # (level, when) for each line above the depth reached within the horizon
    rate_cm_h: float


def forecast(depth_cm: float, depth_at: float, at: float, response: Response, trend_cm_h: float, rain_mm_h: float,
             rain_change: float, s: Settings) -> Forecast:
    """The depths ahead of `at` and the lines crossed within the longest horizon, from the depth
    read at `depth_at`, minute by minute, the rain going on changing as it last did
    (`rain_change`, mm/h an hour; never below none). A line the model says was crossed between
    the reading and `at` is crossed at `at`."""
    horizons = s.nowcast.horizons_min
    lines = list(zip(LEVELS, s.waterlogging.levels_cm))
    t, depth, end = depth_at, depth_cm, at + max(horizons) * 60
    marks = [at + m * 60 for m in horizons]
    depths: list[float] = []
    crossings: list[tuple[str, float]] = []
    while t < end:
        step = min(60.0, (marks[len(depths)] if len(depths) < len(marks) else end) - t) or 60.0
        rain = max(0.0, rain_mm_h + rain_change * (t - at) / 3600)
        after = max(0.0, depth + rate_of(response, trend_cm_h, rain, s) * step / 3600)
        crossings += [(level, max(t + step, at)) for level, line in lines if depth < line <= after and line > depth_cm]
        t, depth = t + step, after
        while len(depths) < len(marks) and t >= marks[len(depths)]:
            depths.append(round(depth, 1))
    return Forecast(at, depths, crossings, round(rate_of(response, trend_cm_h, rain_mm_h, s), 2))


@dataclass(frozen=True, slots=True)
class Outlook:
    """A point's nowcast state: its learned response, the rain over it, and its warning."""

    response: Response
    rain_mm_h: float = 0.0
    rain_as_of: float | None = None
    rain_change: float = 0.0  # how the rain changed at its last update, mm/h an hour
    rain_known: bool = True  # False while every gauge of the zone is silent: nothing is learned
    level: str | None = None  # the level warned of, while warning
    onset: float | None = None  # when it is expected
    unexpected_since: float | None = None  # no longer predicted since, while warning
    incident: Incident | None = None
    latest: Forecast | None = None


def warned_of(f: Forecast, observed: str | None, s: Settings) -> list[tuple[str, float]]:
    """The crossings of a forecast worth a warning: from `warn_from` up, above the level the water
    has reached, within `warn_within_min`."""
    n = s.nowcast
    return [(level, t) for level, t in f.crossings if rank(level) >= rank(n.warn_from) and rank(level) > rank(observed)
            and t <= f.at + n.warn_within_min * 60]


def step_outlook(
    outlook: Outlook, f: Forecast, observed: str | None, point: WaterloggingPoint, s: Settings
) -> tuple[Outlook, Alert | None]:
    """Warn of the highest line from `warn_from` up that the forecast crosses within
    `warn_within_min` and the water has not reached (`observed`: the level under alert): Alert,
    then Update when a higher line is predicted or the time moves by `update_shift_s`; Cancel when
    the water gets there (its own alert takes over) or once no crossing is predicted for `hold_s`.
    A warning never steps down to a lower line while it stands, so a wobbling forecast does not
    flap."""
    n = s.nowcast
    ahead, before = warned_of(f, observed, s), outlook.latest
    outlook = replace(outlook, latest=f)
    target = ahead[-1] if ahead else None
    if target is not None and outlook.level is not None and rank(target[0]) < rank(outlook.level):
        target = (outlook.level, outlook.onset or target[1])  # the higher line stands until the warning ends
    if outlook.level is None:
        if target is None or before is None or not warned_of(before, observed, s):
            return outlook, None  # a warning needs the crossing predicted twice running
        incident = Incident(cap_id(f"nowcast.{point.point_id}.{int(f.at)}"))
        return _outlook_message(replace(outlook, level=target[0], onset=target[1], incident=incident), "Alert", f, point, s)
    if rank(observed) >= rank(outlook.level):
        return _end(outlook, "reached", f, point, s)
    if target is None:
        since = outlook.unexpected_since if outlook.unexpected_since is not None else f.at
        if f.at - since >= n.hold_s:  # an all clear only where the point has no alert of its own out
            return _end(outlook, "not_reached" if observed is None else "not_reached_yet_flooded", f, point, s)
        return replace(outlook, unexpected_since=since), None
    moved = target[0] != outlook.level or abs(target[1] - (outlook.onset or target[1])) >= n.update_shift_s
    outlook = replace(outlook, unexpected_since=None)
    if not moved:
        return outlook, None
    return _outlook_message(replace(outlook, level=target[0], onset=target[1]), "Update", f, point, s)


def withdraw(outlook: Outlook, at: float, point: WaterloggingPoint, s: Settings) -> tuple[Outlook, Alert | None]:
    """The point's sensor went faulty, stuck or silent: a warning standing on it is withdrawn."""
    if outlook.level is None:
        return outlook, None
    return _end(outlook, "sensor_unavailable", Forecast(at, [], [], 0.0), point, s)


# How a warning ends: what the last message says (zh, en), and whether it is an all clear.
ENDINGS = {
    "reached": ("积水已达预计深度，请关注积水预警。", "The water reached the line; see the waterlogging alert.", False),
    "not_reached": ("预计积水不再达到该深度。", "The water is no longer expected to reach the line.", True),
    "not_reached_yet_flooded": ("预计积水不再达到该深度，请关注积水预警。",
                                "The water is no longer expected to reach the line; see the waterlogging alert.", False),
    "sensor_unavailable": ("水位传感器暂无有效读数，该预报撤回。",
                           "The depth sensor is not reporting reliably: this forecast is withdrawn.", False),
}


def _end(outlook: Outlook, outcome: str, f: Forecast, point: WaterloggingPoint, s: Settings) -> tuple[Outlook, Alert]:
    _, alert = _outlook_message(outlook, "Cancel", f, point, s, outcome)
    return replace(outlook, level=None, onset=None, unexpected_since=None, incident=None), alert


FORECAST_TEXT = {
    "closure": ("预计积水封路", "Road closure by waterlogging expected",
                "请提前绕行，并在此之前将车辆驶离地下车库等低洼处。",
                "Plan another route, and move vehicles out of underground garages and underpasses before then."),
    "severe": ("预计严重积水", "Severe waterlogging expected", "请提前远离涵洞、下穿通道和地下空间。",
               "Keep away from culverts, underpasses and underground spaces before then."),
}


def _outlook_message(
    outlook: Outlook, msg_type: MsgType, f: Forecast, point: WaterloggingPoint, s: Settings, outcome: str | None = None
) -> tuple[Outlook, Alert]:
    level, onset, incident = outlook.level, outlook.onset, outlook.incident
    assert level is not None and onset is not None and incident is not None  # a warning under way
    zh_head, en_head, zh_do, en_do = FORECAST_TEXT.get(level, FORECAST_TEXT["closure"])
    ahead = ", ".join(f"{d:.0f} cm in {m:g} min" for d, m in zip(f.depths_cm, s.nowcast.horizons_min))
    zh_ahead = "，".join(f"{m:g}分钟后{d:.0f}厘米" for d, m in zip(f.depths_cm, s.nowcast.horizons_min))
    r = outlook.response
    why = (f"Forecast from the rain over the zone ({outlook.rain_mm_h:.0f} mm/h) and the recent rise: {ahead}. "
           f"This point rises {r.cm_per_mm:.2f} cm per mm of rain and drains {r.drain_cm_h:.0f} cm an hour "
           f"(learned from {r.readings} readings).")
    when = cap_time(onset)[11:16]
    if msg_type == "Cancel":
        zh, en, _ = ENDINGS[outcome or "not_reached"]
        texts = {"zh-CN": (f"{point.name}积水预报解除", zh, zh),
                 "en-US": (f"Waterlogging forecast ended at {point.name}", en, en)}
    else:
        texts = {"zh-CN": (f"{point.name}{zh_head}（约{when}）", f"{point.name}积水预报：{zh_ahead}。", zh_do),
                 "en-US": (f"{en_head} at {point.name} around {when} UTC", why, en_do)}
    parameters = [("point_id", point.point_id), ("zone_id", point.zone_id), ("level", level),
                  ("expected_at", cap_time(onset)), ("rate_cm_h", f"{f.rate_cm_h:.1f}"),
                  *((f"depth_{m:g}min_cm", f"{d:.1f}") for d, m in zip(f.depths_cm, s.nowcast.horizons_min))]
    if outcome is not None:
        parameters.append(("outcome", outcome))
    if point.segment_id:
        parameters.append(("segment_id", point.segment_id))
    area = circle_area(f"{point.name} ({point.kind.replace('_', ' ')})", point.lat, point.lon, POINT_RADIUS_KM)
    cleared = msg_type == "Cancel"
    # A warning ends with an all clear only where nothing else stands; otherwise with no action of
    # its own (the waterlogging alert, or the sensor's fault, has it).
    response: ResponseType = "Prepare" if not cleared else "AllClear" if ENDINGS[outcome or "not_reached"][2] else "None"
    info = bilingual(texts, "Met", "Road waterlogging forecast", response,
                     "Past" if cleared else "Expected", SEVERITY[level], "Likely", parameters, [area])
    incident, alert = incident.message(s.cap, msg_type, f.at, info, onset=None if cleared else onset)
    return replace(outlook, incident=incident), alert

