"""Exceptions mirror the core's error kinds and carry their fields."""

from __future__ import annotations

import pickle

import pytest
from pathlib import Path

import kgenv
from conftest import assert_consistent, gce_env
from kgenv.testing import Fault, MockWorld


def test_stockout_in_every_zone(world: MockWorld) -> None:
    env = gce_env(world)
    world.add_stockout_zone("us-central1-a")
    world.add_stockout_zone("us-central1-b")
    with pytest.raises(kgenv.StockoutError) as e:
        env.up(progress=False)
    err = e.value
    assert err.zone == "us-central1-b", "the last zone tried"
    assert err.step == "instance" and "instance" in err.failed_steps
    assert err.kind == "stockout" and not err.retryable
    assert "us-central1-a" in err.message and "us-central1-b" in err.message
    assert isinstance(err, kgenv.BackendError) and isinstance(err, kgenv.KgenvError)
    assert not world.state()["instances"]
    assert_consistent(env, world)


def test_stockout_in_one_zone_moves_on(world: MockWorld) -> None:
    env = gce_env(world)
    world.add_stockout_zone("us-central1-a")
    env.up(progress=False)
    assert list(world.state()["instances"]) == ["my-project/us-central1-b/kg"]


def test_quota_fields(world: MockWorld) -> None:
    env = gce_env(world)
    world.fail_next("compute.insert_instance", Fault.quota("GPUS_ALL_REGIONS", limit=0))
    with pytest.raises(kgenv.QuotaError) as e:
        env.up(progress=False)
    assert (e.value.metric, e.value.limit, e.value.scope, e.value.region) == ("GPUS_ALL_REGIONS", 0.0, "global", None)
    world.fail_next("compute.insert_instance", Fault.quota("NVIDIA_T4_GPUS", limit=4, region="us-central1"))
    with pytest.raises(kgenv.QuotaError) as e:
        env.up(progress=False)
    assert (e.value.metric, e.value.limit, e.value.scope, e.value.region) == ("NVIDIA_T4_GPUS", 4.0, "region", "us-central1")
    assert "in region us-central1" in str(e.value)


@pytest.mark.parametrize(
    ("fault", "cls", "fields"),
    [
        (Fault.permission_denied(), kgenv.AuthError, {"kind": "permission_denied"}),
        (Fault.connection(), kgenv.ConnectionFailedError, {"kind": "connection", "retryable": True}),
        (Fault.rate_limited(), kgenv.RateLimitedError, {"kind": "rate_limited", "service": "mock", "retryable": True}),
        (Fault.transient(), kgenv.TransientError, {"kind": "transient", "retryable": True}),
    ],
)
def test_fault_kinds_map_to_classes(world: MockWorld, fault: Fault, cls: type[kgenv.KgenvError], fields: dict[str, object]) -> None:
    env = gce_env(world)
    # Every call of the op fails, so retries (if any) cannot hide the fault.
    world.fail_next("compute.get_firewall", fault, times=100)
    with pytest.raises(cls) as e:
        env.up(progress=False)
    for k, v in fields.items():
        assert getattr(e.value, k) == v, (k, e.value)
    assert e.value.step == "firewall/kg-ssh"
    # Steps after the failed one did not run.
    assert not world.state()["containers"]


def test_connection_errors_are_remote_errors(world: MockWorld) -> None:
    env = gce_env(world)
    world.fail_next("remote.connect", Fault.connection(), times=100)
    with pytest.raises(kgenv.RemoteError) as e:
        env.up(progress=False)
    assert isinstance(e.value, kgenv.ConnectionFailedError) and e.value.endpoint
    assert e.value.step == "host"
    assert_consistent(env, world)


def test_failed_command_fields(world: MockWorld) -> None:
    env = gce_env(world)
    env.up(progress=False)
    world.set_host_gpus(0)
    with pytest.raises(kgenv.CommandFailedError) as e:
        env.gpus()
    assert e.value.exit_code == 127
    assert "nvidia-smi" in (e.value.command or "") and e.value.stderr_tail


def test_a_required_gpu_missing_stops_at_the_container(world: MockWorld) -> None:
    # The gce spec asks for a GPU: a host without one fails the container step, typed.
    world.set_host_gpus(0)
    env = gce_env(world)
    with pytest.raises(kgenv.KgenvError) as e:
        env.up(progress=False)
    assert "container" in str(e.value) and "GPU" in str(e.value)


def test_real_backends_plan_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No credential source at all: the real GCE client says so, and plan still runs,
    # showing what it could not observe (as the CLI does). Nothing is contacted.
    for var in ("GOOGLE_OAUTH_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    env = kgenv.Env("kg", instance=kgenv.Instance(project="my-project", zones=["us-central1-a"]), state_dir=tmp_path / "state")
    assert env.backends == "real" and env.world is None
    plan = env.plan(progress=False)
    instance = plan["instance"]
    assert instance.change == "unknown", instance
    preflight = plan["preflight"]
    assert preflight.change == "unknown", preflight
    assert any("no Google Cloud credentials" in d for d in preflight.diff), preflight.diff


def test_env_is_locked_while_another_run_holds_it(world: MockWorld) -> None:
    import threading

    # Longer than the second a run waits for a lock that is still held (LOCK_GRACE).
    world.set_latency("compute.insert_instance", 2.5)
    env = gce_env(world)
    other = gce_env(world)
    entered = threading.Event()
    t = threading.Thread(target=lambda: env.up(on_event=lambda e: entered.set()))
    t.start()
    entered.wait()
    try:
        with pytest.raises(kgenv.EnvLockedError) as e:
            other.up(progress=False)
        assert e.value.reason == "locked" and str(e.value.path).endswith("kg.lock")
        assert isinstance(e.value, kgenv.StateError)
    finally:
        t.join()


def test_corrupt_state_is_a_state_error(env: kgenv.Env) -> None:
    env.state_file.parent.mkdir(parents=True, exist_ok=True)
    env.state_file.write_text("{not json")
    with pytest.raises(kgenv.StateError) as e:
        env.status()
    assert e.value.reason == "corrupt" and e.value.path == env.state_file
    assert "will not delete what it cannot read" in str(e.value)


def test_a_hung_host_command_is_a_command_timeout_naming_its_step(world: MockWorld) -> None:
    env = gce_env(world, timeouts={"data": "2h", "default": "15m"})
    world.fail_next("remote.exec", Fault.command_timeout())
    with pytest.raises(kgenv.CommandTimeoutError) as e:
        env.up(progress=False)
    err = e.value
    assert isinstance(err, kgenv.OperationTimeoutError) and isinstance(err, TimeoutError)
    assert err.kind == "timeout" and err.retryable
    assert err.step is not None and err.step in err.failed_steps, "the step that ran it"
    assert err.last_lines == ["injected: the command hung"] and err.last_seen == "injected: the command hung"
    assert (err.host, err.after, err.inactivity) == ("mock", 600.0, False)
    assert err.command and err.command in err.message


def test_timeouts_are_validated_naming_the_key(world: MockWorld) -> None:
    with pytest.raises(kgenv.ValidationError) as e:
        gce_env(world, timeouts={"bukket": "1m"})
    assert e.value.field == "timeouts.bukket" and "bucket" in e.value.rule
    with pytest.raises(kgenv.ValidationError) as e:
        gce_env(world, timeouts={"data/titanic": "soon"})
    assert e.value.field == "timeouts.data/titanic" and '"10m"' in e.value.rule
    with pytest.raises(TypeError):
        gce_env(world, timeouts={"data": 60})


def test_exceptions_pickle_and_repr() -> None:
    err = kgenv.StockoutError("zone us-central1-a has no capacity", zone="us-central1-a", resource="t4", step="instance")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is kgenv.StockoutError
    assert (back.zone, back.step, str(back)) == ("us-central1-a", "instance", "zone us-central1-a has no capacity")
    assert repr(err) == "StockoutError('zone us-central1-a has no capacity', zone='us-central1-a', resource='t4', step='instance')"
    t = kgenv.OperationTimeoutError("waited", what="boot", after=60.0)
    assert isinstance(t, TimeoutError) and t.what == "boot"
    assert kgenv.KgenvError("x", brand_new_field=1).details == {"brand_new_field": 1}
