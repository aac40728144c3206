"""A script using kgenv's public API the way a notebook would. test_typing.py type-checks
it with `mypy --strict` against the package's inline types and `_kgenv.pyi`; it is also
run, so the stubs cannot describe an API that does not exist."""

from __future__ import annotations

import asyncio

import kgenv
from kgenv import events
from kgenv.testing import Fault, MockWorld


def build(world: MockWorld) -> kgenv.Env:
    return kgenv.Env(
        "typed",
        instance=kgenv.Instance(project="my-project", zones=["us-central1-a"], machine_type="g2-standard-8", gpu_type="nvidia-l4", gpu_count=1),
        firewalls=[kgenv.Firewall("typed-ssh", ports=[22, "60000-60010"])],
        image=kgenv.Image(apt=["cmake"], pip=["lightgbm==4.5.0"]),
        container=kgenv.Container(gpus="all", ports=[kgenv.Publish(8888, host=8888)], mounts=[kgenv.Mount("/mnt/gcs", "/kaggle/gcs")]),
        jupyter=kgenv.Jupyter(auth="token", tls="self-signed"),
        data=[kgenv.Data("titanic", files=["*.csv"])],
        autostop=kgenv.Autostop(60),
        backends=world,
    )


def on_event(ev: kgenv.Event) -> None:
    if isinstance(ev, events.ProgressEvent) and ev.fraction is not None:
        pct: float = ev.fraction * 100
        assert pct >= 0
    elif isinstance(ev, events.FailedEvent):
        kind: str = ev.error_kind
        assert kind


def sync_flow(env: kgenv.Env) -> int:
    plan: kgenv.Plan = env.plan()
    creates: int = plan.count("create")
    steps: list[str] = [p.step for p in plan if p.change != "none"]
    report: kgenv.Report = env.up(on_event=on_event, progress=False)
    changed: tuple[str, ...] = report.changed
    status: kgenv.Status = env.status()
    gpus: list[str] = env.gpus()
    result: kgenv.CommandResult = env.ssh(["nvidia-smi", "-L"])
    url: str = env.jupyter_url()
    env.close()
    with env.jupyter() as tunnel:
        port: int = tunnel.port
        assert port > 0
    preview: kgenv.DownPreview = env.down_preview()
    assert preview.deletes and all(isinstance(k, str) for k in preview.keeps)
    down: kgenv.Report = env.down(yes=True, progress=False)
    return creates + len(steps) + len(changed) + len(status.resources()) + len(gpus) + result.exit_code + len(url) + len(down)


async def async_flow(env: kgenv.Env) -> bool:
    plan = await env.plan_async(only=["firewall"], until=None)
    report = await env.up_async(progress=False)
    data: kgenv.DownloadResult = await kgenv.data.download_async("titanic", "/data/t", backends=env.world or "mock", progress=False)
    await env.down_async(yes=True, progress=False)
    return plan.has_changes and bool(report.changed) and data.bytes > 0


def errors(world: MockWorld, env: kgenv.Env) -> str | None:
    world.fail_next("compute.insert_instance", Fault.quota("GPUS_ALL_REGIONS", limit=0.0))
    try:
        env.up(progress=False)
    except kgenv.QuotaError as e:
        metric: str | None = e.metric
        return metric
    except kgenv.StockoutError as e:
        return e.zone
    except kgenv.KgenvError as e:
        return e.kind
    return None


def main() -> None:
    world = MockWorld()
    env = build(world)
    assert sync_flow(env) > 0
    assert asyncio.run(async_flow(env))
    assert errors(world, env) == "GPUS_ALL_REGIONS"
    hashed: str = kgenv.jupyter.hash_password("pw")
    assert kgenv.jupyter.verify_password("pw", hashed)
    calls: list[kgenv.testing.Call] = world.calls("compute.insert_instance")
    assert calls
    env2 = kgenv.Env.from_toml_str('name = "t"\ntarget = "local"\n', backends="mock")
    assert env2.target == "local"


if __name__ == "__main__":
    main()
