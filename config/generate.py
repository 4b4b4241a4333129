"""Generate a demo registry shaped like the district: 21 towns, residents spread over them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

# (id, name): a district of 21 towns and street offices.
DISTRICT_TOWNS: list[tuple[str, str]] = [
    ("jijiang", "几江街道"),
    ("degan", "德感街道"),
    ("shuangfu", "双福街道"),
    ("dingshan", "鼎山街道"),
    ("shengquan", "圣泉街道"),
    ("luohuang", "珞璜镇"),
    ("zhiping", "支坪镇"),
    ("baisha", "白沙镇"),
    ("shimen", "石门镇"),
    ("zhuyang", "朱杨镇"),
    ("shima", "石蟆镇"),
    ("yongxing", "永兴镇"),
    ("tanghe", "塘河镇"),
    ("xihu", "西湖镇"),
    ("zhongshan", "中山镇"),
    ("lishi", "李市镇"),
    ("ciyun", "慈云镇"),
    ("wutan", "吴滩镇"),
    ("dushi", "杜市镇"),
    ("jiasi", "贾嗣镇"),
    ("gufu", "郭扶镇"),
]

CONDITION_RATES = {"hypertension": 0.35, "copd": 0.12, "atrial_fibrillation": 0.08}
RESIDENTS_PER_CARER = 12


def demo_registry(residents: int, seed: int = 0, towns: int = 21) -> dict[str, Any]:
    """A registry dict (contract format plus institutions and staff) for `residents` people."""
    if residents < 1:
        raise ValueError("residents must be >= 1")
    rng = np.random.default_rng(seed)
    chosen = DISTRICT_TOWNS[: max(1, min(towns, len(DISTRICT_TOWNS)))]
    # Towns differ in size: weights from a gamma draw, so some towns hold many more people.
    weights = rng.gamma(2.0, 1.0, len(chosen))
    town_of = rng.choice(len(chosen), size=residents, p=weights / weights.sum())
    town_of[: len(chosen)] = np.arange(min(len(chosen), residents))  # every town has someone
    institutions = [
        {
            "id": f"inst-{k:02d}",
            "name": f"第{k + 1}养老服务中心",
            "towns": [t for j, (t, _) in enumerate(chosen) if j % 7 == k],
        }
        for k in range(min(7, len(chosen)))
    ]
    staff: list[dict[str, Any]] = []
    for inst in institutions:
        staff.append(
            {
                "id": f"desk-{inst['id']}",
                "name": f"{inst['name']}值班台",
                "tier": 2,
                "institution": inst["id"],
            }
        )
    for tid, tname in chosen:
        staff.append({"id": f"town-{tid}", "name": f"{tname}民政办", "tier": 3, "town": tid})
    staff.append({"id": "district-centre", "name": "区级救助服务中心", "tier": 4})
    out_residents: list[dict[str, Any]] = []
    carers: dict[str, list[str]] = {}
    in_town: dict[str, int] = {}
    for i in range(residents):
        tid = chosen[int(town_of[i])][0]
        inst_id = institutions[int(town_of[i]) % len(institutions)]["id"]
        carer_list = carers.setdefault(tid, [])
        n_in_town = in_town.get(tid, 0)
        in_town[tid] = n_in_town + 1
        if n_in_town % RESIDENTS_PER_CARER == 0:
            carer_id = f"carer-{tid}-{len(carer_list) + 1:02d}"
            carer_list.append(carer_id)
            staff.append(
                {
                    "id": carer_id,
                    "name": f"服务人员{carer_id[-2:]}",
                    "tier": 1,
                    "town": tid,
                    "institution": inst_id,
                }
            )
        conditions = [c for c, p in CONDITION_RATES.items() if rng.random() < p]
        out_residents.append(
            {
                "id": f"r-{i + 1:04d}",
                "town": tid,
                "device": f"dev-{i + 1:04d}",
                "institution": inst_id,
                "staff": carer_list[-1],
                "conditions": conditions,
            }
        )
    return {
        "timezone": "Asia/Shanghai",
        "towns": [{"id": t, "name": n} for t, n in chosen],
        "institutions": institutions,
        "staff": staff,
        "residents": out_residents,
    }


def write_demo_registry(path: str | Path, residents: int, seed: int = 0, towns: int = 21) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = demo_registry(residents, seed=seed, towns=towns)
    out.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out
