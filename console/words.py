"""Alert kinds and evidence in words, in Chinese (the English line is the alert's own
`message`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

KIND_ZH: dict[str, str] = {
    "fall": "跌倒", "hypoxemia": "低血氧", "bradycardia": "心动过缓", "tachycardia": "心动过速",
    "bradypnoea": "呼吸过缓", "tachypnoea": "呼吸过速", "fever": "发热", "hypothermia": "体温过低",
    "hypotension": "低血压", "hypertensive_crisis": "高血压危象", "news2": "NEWS2 预警评分",
    "baseline_deviation": "偏离个人基线", "inactivity": "长时间无活动", "not_worn": "未佩戴",
    "device_offline": "设备离线", "low_battery": "电量低", "hazard": "安全隐患",
}
# the same kinds in English, for bilingual labels ("跌倒 Fall"; the board's are in common.js)
KIND_EN: dict[str, str] = {
    "fall": "Fall", "hypoxemia": "Hypoxemia", "bradycardia": "Bradycardia",
    "tachycardia": "Tachycardia", "bradypnoea": "Bradypnoea", "tachypnoea": "Tachypnoea",
    "fever": "Fever", "hypothermia": "Hypothermia", "hypotension": "Hypotension",
    "hypertensive_crisis": "Hypertensive crisis", "news2": "NEWS2 early warning score",
    "baseline_deviation": "Baseline deviation", "inactivity": "Inactivity",
    "not_worn": "Not worn", "device_offline": "Device offline", "low_battery": "Low battery",
    "hazard": "Safety hazard",
}
VITAL_ZH = {"hr": "心率", "spo2": "血氧", "rr": "呼吸频率", "temp_c": "体温", "sbp": "收缩压",
            "dbp": "舒张压", "activity": "活动量"}


def _num(value: Any, digits: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "?"
    return f"{value:.{digits}f}"


def _dur(ev: dict[str, Any]) -> str:
    d = ev.get("duration_s")
    if isinstance(d, bool) or not isinstance(d, int | float) or d != d:
        return ""
    if d >= 3600:
        return f"，持续 {d / 3600:.1f} 小时"
    if d >= 120:
        return f"，持续 {d / 60:.0f} 分钟"
    return f"，持续 {d:.0f} 秒"


def _vital(label: str, key: str, cmp: str, unit: str, digits: int = 0) -> Callable[..., str]:
    def build(ev: dict[str, Any]) -> str:
        worst = f"（最{'低' if cmp == '≤' else '高'} {_num(ev.get(key), digits)}{unit}）" \
            if key in ev else ""
        return f"{label} {cmp} {_num(ev.get('threshold'), digits)}{unit}" + _dur(ev) + worst
    return build


def _bp(label: str) -> Callable[..., str]:
    def build(ev: dict[str, Any]) -> str:
        return (f"{label}：血压 {_num(ev.get('sbp'))}/{_num(ev.get('dbp'))} mmHg，"
                f"连续 {_num(ev.get('readings'))} 次")
    return build


def _fall(ev: dict[str, Any]) -> str:
    if ev.get("source") == "device":
        return "设备报告跌倒"
    return f"疑似跌倒：冲击 {_num(ev.get('impact_g'), 1)} g 后静止" + _dur(ev)


def _news2(ev: dict[str, Any]) -> str:
    return f"NEWS2 评分 {_num(ev.get('score'))}" + _dur(ev)


def _baseline(ev: dict[str, Any]) -> str:
    vital = VITAL_ZH.get(str(ev.get("vital")), str(ev.get("vital", "体征")))
    return (f"{vital} {_num(ev.get('value'), 1)}，本时段常值 {_num(ev.get('baseline'), 1)}"
            f"（z {_num(ev.get('z'), 1)}）" + _dur(ev))


def _offline(ev: dict[str, Any]) -> str:
    if ev.get("last_will"):
        # MQTT's "Last Will" is not 遗嘱 here (a deceased person's will, next to a resident's
        # name): say what happened, the connection dropped without a goodbye
        return "设备离线（连接异常断开）"
    silent = ev.get("silent_s", 0)
    minutes = silent / 60 if isinstance(silent, int | float) else float("nan")
    return f"{_num(minutes)} 分钟无数据"


def _hazard(ev: dict[str, Any]) -> str:
    note = " ".join(str(ev.get("note") or "").split())  # one line, as on the board
    return "发现安全隐患" + (f"：{note}" if note else "")


ZH: dict[str, Callable[[dict[str, Any]], str]] = {
    "hypoxemia": _vital("血氧", "spo2_min", "≤", "%"),
    "bradycardia": _vital("心率", "hr_min", "≤", " 次/分"),
    "tachycardia": _vital("静息心率", "hr_max", "≥", " 次/分"),
    "bradypnoea": _vital("呼吸", "rr_min", "≤", " 次/分"),
    "tachypnoea": _vital("呼吸", "rr_max", "≥", " 次/分"),
    "fever": _vital("体温", "temp_c_max", "≥", " °C", 1),
    "hypothermia": _vital("体温", "temp_c_min", "≤", " °C", 1),
    "hypotension": _bp("低血压"),
    "hypertensive_crisis": _bp("高血压危象"),
    "fall": _fall,
    "news2": _news2,
    "baseline_deviation": _baseline,
    "inactivity": lambda ev: "清醒时段无活动" + _dur(ev),
    "not_worn": lambda ev: "设备未佩戴" + _dur(ev),
    "device_offline": _offline,
    "low_battery": lambda ev: f"电量低：{_num(ev.get('battery'))}%",
    "hazard": _hazard,
}


def evidence_zh(kind: str, evidence: dict[str, Any]) -> str:
    """One line in Chinese; never raises."""
    try:
        build = ZH.get(kind)
        return build(evidence) if build else KIND_ZH.get(kind, kind)
    except Exception:  # a label must never break the board
        return KIND_ZH.get(kind, kind)
