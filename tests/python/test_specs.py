"""Building environments: keyword arguments and TOML, validation errors that name the
argument, config errors with file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

import kgenv
from conftest import EXAMPLE_TOML


def test_section_errors_name_the_argument_where_it_is_written() -> None:
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.Instance(project="my-project", zones=["us-central1-a"], gpu_count=3)
    assert e.value.field == "gpu_count"
    assert "kgenv.Instance(gpu_count=3)" in str(e.value)
    assert e.value.kind == "validation"
    cases = [
        (lambda: kgenv.Instance(zones=["nowhere"]), "zones"),
        (lambda: kgenv.Instance(disk_size_gb=20), "disk_size_gb"),
        (lambda: kgenv.Firewall("kg-web", ports=[70000]), "ports"),
        (lambda: kgenv.Firewall("kg-web", ports=[22], source_ranges=["10.0.0.0/99"]), "source_ranges"),
        (lambda: kgenv.Container(shm_size="lots"), "shm_size"),
        (lambda: kgenv.Container(ports=[kgenv.Publish(8888, bind="localhost!")]), "ports"),
        (lambda: kgenv.Jupyter(auth="none"), "auth"),  # type: ignore[arg-type]
        (lambda: kgenv.Image(apt=["cmake; rm -rf /"]), "apt"),
        (lambda: kgenv.Data("Titanic!"), "competition"),
        (lambda: kgenv.Data("titanic", dest="relative/dir"), "dest"),
        (lambda: kgenv.Autostop(1), "idle_minutes"),
        (lambda: kgenv.BucketMount("Not A Bucket"), "bucket"),
        (lambda: kgenv.GithubKey(repo="not-a-repo"), "repo"),
        (lambda: kgenv.Ssh("nohost"), "host"),
        (lambda: kgenv.Instance(machine_type="g2-standard-8", gpu_type="nvidia-l4", provisioning="flex-start"), "max_run_duration"),
        (lambda: kgenv.Instance(machine_type="g2-standard-8", gpu_type="nvidia-l4", provisioning="flex-start", max_run_duration="8d"), "max_run_duration"),
        (lambda: kgenv.Instance(provisioning="standard", spot=True), "spot"),
    ]
    for make, field in cases:
        with pytest.raises(kgenv.ValidationError) as e:
            make()
        assert e.value.field == field, (field, e.value)
        assert field in str(e.value)
        assert isinstance(e.value, ValueError)


def test_wrong_types_are_type_errors_naming_the_argument() -> None:
    with pytest.raises(TypeError, match=r"kgenv.Instance\(gpu_count='1'\): expected int"):
        kgenv.Instance(gpu_count="1")  # type: ignore[arg-type]
    # A string is "auto" or nothing: one zone is still a list.
    with pytest.raises(kgenv.ValidationError, match="zones.*auto"):
        kgenv.Instance(zones="us-central1-a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="spot"):
        kgenv.Instance(spot=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"kgenv.Env\(instance=...\)"):
        kgenv.Env("kg", instance={"project": "my-project"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"data\[1\]"):
        kgenv.Env("kg", target="local", data=[kgenv.Data("titanic"), "x"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        kgenv.Instance(gpus=1)  # type: ignore[call-arg]


def test_env_errors_carry_the_python_argument_path() -> None:
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.Env("kg", target="local", image=kgenv.Image(), container=kgenv.Container(), autostop=kgenv.Autostop(30))
    assert e.value.field == "autostop"
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.Env("Bad_Name", target="local")
    assert e.value.field == "name"
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.Env("kg")
    assert e.value.field == "instance"
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.Env("kg", target="local", firewalls=[kgenv.Firewall("kg-ssh", ports=[22])])
    # [[firewall]] in TOML is firewalls= in Python.
    assert e.value.field == "firewalls", e.value
    assert "`firewalls`" in str(e.value)
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.Env("kg", target="local", image=kgenv.Image(), container=kgenv.Container(ports=[9000]), jupyter=kgenv.Jupyter())
    assert e.value.field == "container.ports"


def test_keyword_arguments_build_the_same_spec_as_toml() -> None:
    text = """
name = "kg"
target = "local"
[image]
pip = ["lightgbm"]
[container]
gpus = "none"
ports = [{ container = 8888, host = 9999 }]
[jupyter]
auth = "token"
[[data]]
competition = "titanic"
files = ["*.csv"]
"""
    from_toml = kgenv.Env.from_toml_str(text, backends="mock")
    from_kwargs = kgenv.Env(
        "kg",
        target="local",
        image=kgenv.Image(pip=["lightgbm"]),
        container=kgenv.Container(gpus="none", ports=[kgenv.Publish(8888, host=9999)]),
        jupyter=kgenv.Jupyter(auth="token"),
        data=[kgenv.Data("titanic", files=["*.csv"])],
        backends="mock",
    )
    assert from_toml.spec == from_kwargs.spec
    spec = from_kwargs.spec
    assert spec["container"]["name"] == "kgenv-kg"
    assert spec["container"]["ports"] == [{"container": 8888, "host": 9999, "bind": "127.0.0.1"}]
    assert [s.id for s in from_kwargs.steps] == ["host", "image", "container", "gpu", "jupyter", "data/titanic"]
    assert from_kwargs.steps[2].deps == ("image",)


def test_autostop_thresholds_and_budget_build_as_in_toml() -> None:
    text = """
name = "kg"
[instance]
project = "my-project"
zones = ["us-central1-a"]
[autostop]
idle_minutes = 45
gpu_util_percent = 30
cpu_percent = 50
warn_minutes = 10
[budget]
max_hours = 12.5
max_cost = 40
"""
    from_toml = kgenv.Env.from_toml_str(text, backends="mock")
    from_kwargs = kgenv.Env(
        "kg",
        instance=kgenv.Instance(project="my-project", zones=["us-central1-a"]),
        autostop=kgenv.Autostop(45, gpu_util_percent=30, cpu_percent=50, warn_minutes=10),
        budget=kgenv.Budget(max_hours=12.5, max_cost=40),
        backends="mock",
    )
    assert from_toml.spec == from_kwargs.spec
    assert from_kwargs.spec["autostop"] == {"idle_minutes": 45, "gpu_util_percent": 30, "cpu_percent": 50, "warn_minutes": 10}
    assert from_kwargs.spec["budget"] == {"max_hours": 12.5, "max_cost": 40.0}
    assert "autostop" in [s.id for s in from_kwargs.steps]
    budget_only = kgenv.Env(
        "kg", instance=kgenv.Instance(project="my-project", zones=["us-central1-a"]), budget=kgenv.Budget(max_hours=3), backends="mock"
    )
    assert "autostop" in [s.id for s in budget_only.steps], "the budget runs in the same host agent"
    for make, field in [
        (lambda: kgenv.Autostop(30, warn_minutes=30), "warn_minutes"),
        (lambda: kgenv.Autostop(30, gpu_util_percent=0), "gpu_util_percent"),
        (lambda: kgenv.Autostop(30, cpu_percent=101), "cpu_percent"),
        (lambda: kgenv.Budget(), "max_hours"),
        (lambda: kgenv.Budget(max_cost=-1), "max_cost"),
    ]:
        with pytest.raises(kgenv.ValidationError) as e:
            make()
        assert e.value.field == field, (field, e.value)
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.Env("kg", target="local", image=kgenv.Image(), container=kgenv.Container(), budget=kgenv.Budget(max_hours=1))
    assert e.value.field == "budget"


def test_location_defaults_come_from_arguments_or_gcloud_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = kgenv.Env("kg", instance=kgenv.Instance(), project="arg-project", zone="europe-west4-a")
    assert (env.spec["instance"]["project"], env.spec["instance"]["zones"]) == ("arg-project", ["europe-west4-a"])
    monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", "env-project")
    monkeypatch.setenv("CLOUDSDK_COMPUTE_ZONE", "asia-northeast1-c")
    env = kgenv.Env("kg", instance=kgenv.Instance())
    assert (env.spec["instance"]["project"], env.spec["instance"]["zones"]) == ("env-project", ["asia-northeast1-c"])


def test_ssh_target_shorthand() -> None:
    a = kgenv.Env("kg", target=kgenv.Ssh("ubuntu@gpu-box:2222"))
    b = kgenv.Env("kg", target="ssh", ssh=kgenv.Ssh("ubuntu@gpu-box:2222"))
    assert a.spec == b.spec
    assert a.spec["target"] == {"ssh": {"user": "ubuntu", "host": "gpu-box", "port": 2222, "identity_file": None, "trust_on_first_use": False}}


def test_config_errors_point_at_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "kgenv.toml"
    path.write_text('name = "kg"\n[instance]\nproject = "my-project"\nzones = ["us-central1-a"]\ngpu_count = 3\n')
    with pytest.raises(kgenv.ConfigError) as e:
        kgenv.Env.from_toml(path)
    err = e.value
    assert (err.line, err.column, err.field) == (5, 13, "instance.gpu_count")
    assert err.path == path
    assert str(err).startswith(f"{path}:5:13:")
    assert isinstance(err, kgenv.KgenvError) and isinstance(err, ValueError)
    with pytest.raises(kgenv.ConfigError) as e:
        kgenv.Env.from_toml_str('name = "kg"\ntarget = "local"\n[image]\nbasse = "x"\n', path="mine.toml")
    assert e.value.line == 4 and "basse" in e.value.message
    with pytest.raises(kgenv.ConfigError, match="cannot read the config"):
        kgenv.Env.from_toml(tmp_path / "missing.toml")


def test_example_config_loads_with_target_override() -> None:
    env = kgenv.Env.from_toml(EXAMPLE_TOML, backends="mock")
    assert env.name == "kaggle-gpu" and env.target == "gce"
    assert "instance" in [s.id for s in env.steps]
    local = kgenv.Env.from_toml(EXAMPLE_TOML, target="local", backends="mock")
    assert local.target == "local" and "instance" not in [s.id for s in local.steps]


def test_sections_are_frozen_and_comparable() -> None:
    a = kgenv.Instance(project="my-project", zones=["us-central1-a"])
    assert a == kgenv.Instance(project="my-project", zones=("us-central1-a",))
    assert a.zones == ("us-central1-a",)
    with pytest.raises(AttributeError):
        a.project = "other"  # type: ignore[misc]
    assert a.to_dict() == {"project": "my-project", "zones": ["us-central1-a"]}
    assert "gpu_count=None" in repr(a)


def test_env_repr_and_html_list_steps(world: kgenv.testing.MockWorld) -> None:
    env = kgenv.Env("kg", target="local", image=kgenv.Image(), container=kgenv.Container(), backends=world)
    assert repr(env) == "Env('kg', target='local', steps=4, backends=MockWorld())"
    assert "<code>container</code>" in env._repr_html_()
    assert env.state_file.parent == world.state_dir


def test_gcsfuse_options_pass_through_and_a_misspelt_one_names_the_nearest() -> None:
    b = kgenv.BucketMount("kg-data", gcsfuse={"file-cache.max-size-mb": 20480})
    assert b.to_dict()["gcsfuse"] == {"file-cache.max-size-mb": 20480}
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.BucketMount("kg-data", gcsfuse={"file-cache.max-sise-mb": 20480})
    assert e.value.field == "gcsfuse.file-cache.max-sise-mb"
    assert "did you mean `file-cache.max-size-mb`" in str(e.value)


def test_a_service_account_is_accepted_and_a_bad_one_named() -> None:
    kgenv.Instance(service_account="kgenv-runner@my-project.iam.gserviceaccount.com")
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.Instance(service_account="me@gmail.com")
    assert e.value.field == "service_account"


def test_gpu_choices_and_auto_zones() -> None:
    i = kgenv.Instance(
        project="my-project",
        zones="auto",
        gpu=[{"type": "nvidia-l4", "machine_type": "g2-standard-8"}, {"type": "nvidia-tesla-t4", "machine_type": "n1-standard-8", "count": 1}],
    )
    assert i.to_dict()["zones"] == "auto"
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.Instance(project="my-project", zones=["us-central1"], gpu=[{"type": "nvidia-l4", "machine_type": "n1-standard-8"}])
    assert e.value.field == "gpu[0].machine_type"
