"""A rollout's plan and progress, kept in the results store as they happen (two tables of their own).

Every change of a device's status is written before the next action starts, so a rollout stopped anywhere
(Ctrl-C, a host crash, a lost network) leaves a record that ``edgeify rollout status`` describes exactly and
``resume`` / ``abort`` can act on. The tables live beside the benchmark tables in the same database (SQLite or
PostgreSQL) and are created on first use.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, Text, insert, select, update

from ..errors import UsageError
from .plan import Plan

#: rollout states: running → done | failed (a gate failed, rolled back) | paused (devices unreachable)
#: | interrupted (Ctrl-C) | aborted (rolled back on request)
STATES = ("running", "done", "failed", "paused", "interrupted", "aborted")
#: device statuses
DEVICE_STATUSES = ("pending", "deploying", "deployed", "passed", "failed", "rolled-back", "unreachable",
                   "not-rolled-back")

_md = MetaData()
rollouts = Table(
    "rollouts", _md,
    Column("id", String(40), primary_key=True),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("state", String(20), nullable=False),
    Column("plan", Text, nullable=False),
    Column("detail", Text),
)
rollout_devices = Table(
    "rollout_devices", _md,
    Column("rollout_id", String(40), primary_key=True),
    Column("device", String(200), primary_key=True),
    Column("wave", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    #: what the device ran before this rollout touched it (None: the bundle was not installed)
    Column("previous_digest", String(128)),
    #: what the device runs now, as far as this rollout knows
    Column("running_digest", String(128)),
    Column("detail", Text),
    Column("updated_at", String(40), nullable=False),
)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DeviceRecord:
    name: str
    wave: int
    status: str
    previous_digest: str | None
    running_digest: str | None
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "wave": self.wave, "bundle_digest": self.running_digest,
                "previous_digest": self.previous_digest, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class RolloutRecord:
    id: str
    created_at: str
    updated_at: str
    state: str
    plan: Plan
    detail: dict[str, Any]
    devices: tuple[DeviceRecord, ...]

    def device(self, name: str) -> DeviceRecord:
        return next(d for d in self.devices if d.name == name)

    def to_dict(self) -> dict[str, Any]:
        waves = []
        for i, names in enumerate(self.plan.waves):
            sts = [self.device(n).status for n in names]
            waves.append({"wave": i, "devices": list(names), "passed": sts.count("passed"),
                          "failed": sum(s in ("failed", "rolled-back", "not-rolled-back") for s in sts),
                          "unreachable": sts.count("unreachable")})
        return {"rollout_id": self.id, "state": self.state, "created_at": self.created_at,
                "updated_at": self.updated_at, "bundle": self.plan.bundle, "bundle_digest": self.plan.bundle_digest,
                "name": self.plan.name, "gate": self.plan.gate.describe(), "runs": self.plan.runs,
                "rollback": self.plan.rollback, "waves": waves, "detail": self.detail,
                "devices": [d.to_dict() for d in self.devices]}


class RolloutStore:
    """The rollout tables of a results store (``edgeify.store.open_store()``)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.engine = store.engine
        _md.create_all(self.engine, checkfirst=True)

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[Connection]:
        with self.engine.connect() as con:
            con = con.execution_options(write=write)
            with con.begin():
                yield con

    def create(self, plan: Plan) -> str:
        rid = f"r-{uuid.uuid4().hex[:10]}"
        now = _now()
        with self._tx(write=True) as con:
            con.execute(insert(rollouts).values(id=rid, created_at=now, updated_at=now, state="running",
                                                plan=json.dumps(plan.to_dict()), detail="{}"))
            for i, names in enumerate(plan.waves):
                for n in names:
                    con.execute(insert(rollout_devices).values(rollout_id=rid, device=n, wave=i, status="pending",
                                                               detail="{}", updated_at=now))
        return rid

    def set_state(self, rid: str, state: str, **detail: Any) -> None:
        if state not in STATES:
            raise ValueError(state)
        with self._tx(write=True) as con:
            row = con.execute(select(rollouts.c.detail).where(rollouts.c.id == rid)).first()
            merged = {**json.loads(row[0] or "{}"), **detail} if row else detail
            con.execute(update(rollouts).where(rollouts.c.id == rid).values(
                state=state, updated_at=_now(), detail=json.dumps(merged, default=str)))

    def set_device(self, rid: str, name: str, status: str, **fields: Any) -> None:
        if status not in DEVICE_STATUSES:
            raise ValueError(status)
        values: dict[str, Any] = {"status": status, "updated_at": _now()}
        for key in ("previous_digest", "running_digest"):
            if key in fields:
                values[key] = fields.pop(key)
        if "detail" in fields:
            values["detail"] = json.dumps(fields.pop("detail"), default=str)
        with self._tx(write=True) as con:
            con.execute(update(rollout_devices).where(rollout_devices.c.rollout_id == rid,
                                                      rollout_devices.c.device == name).values(**values))

    def get(self, rid: str | None = None) -> RolloutRecord:
        with self._tx() as con:
            q = select(rollouts)
            q = q.where(rollouts.c.id == rid) if rid else q.order_by(rollouts.c.created_at.desc(),
                                                                      rollouts.c.id.desc()).limit(1)
            row = con.execute(q).mappings().first()
            if row is None:
                raise UsageError(f"no rollout {rid!r} in the results store" if rid else
                                 "no rollout in the results store yet",
                                 hint="edgeify rollout status lists the latest; start one with "
                                      "edgeify rollout BUNDLE --devices SELECTOR")
            devs = con.execute(select(rollout_devices).where(rollout_devices.c.rollout_id == row["id"])
                               .order_by(rollout_devices.c.wave, rollout_devices.c.device)).mappings().all()
        plan = Plan.from_dict(json.loads(row["plan"]))
        order = {n: i for i, n in enumerate(plan.devices)}
        records = sorted((DeviceRecord(d["device"], d["wave"], d["status"], d["previous_digest"],
                                       d["running_digest"], json.loads(d["detail"] or "{}")) for d in devs),
                         key=lambda r: order.get(r.name, 1 << 30))
        return RolloutRecord(row["id"], row["created_at"], row["updated_at"], row["state"], plan,
                             json.loads(row["detail"] or "{}"), tuple(records))

    def list(self, limit: int = 20) -> list[RolloutRecord]:
        with self._tx() as con:
            ids = [r[0] for r in con.execute(select(rollouts.c.id).order_by(rollouts.c.created_at.desc())
                                             .limit(limit))]
        return [self.get(i) for i in ids]


__all__ = ["DEVICE_STATUSES", "STATES", "DeviceRecord", "RolloutRecord", "RolloutStore"]
