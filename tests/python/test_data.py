"""`kgenv.data.download` through the Kaggle backend."""

from __future__ import annotations

import pytest

import kgenv
from kgenv import events
from kgenv.testing import MockWorld


def test_download_fetches_selected_files_then_skips_them(world: MockWorld) -> None:
    seen: list[kgenv.Event] = []
    result = kgenv.data.download("titanic", "/data/titanic", files=["t*.csv"], backends=world, on_event=seen.append)
    assert sorted(n for n, _ in result.fetched) == ["test.csv", "train.csv"]
    assert result.bytes == 61_194 + 28_629 and result.skipped == ()
    assert set(world.state()["landed"]) == {"/data/titanic/train.csv", "/data/titanic/test.csv"}
    # Each file's bytes, and the pull's running total (as `kgenv data pull` shows them).
    assert {e.item for e in seen if isinstance(e, events.ProgressEvent)} == {"train.csv", "test.csv", "total"}
    assert all(e.step == "data/titanic" for e in seen)
    again = kgenv.data.download("titanic", "/data/titanic", files=["t*.csv"], backends=world, progress=False)
    assert again.fetched == () and sorted(again.skipped) == ["test.csv", "train.csv"]
    assert "2 already there" in str(again)


@pytest.mark.asyncio
async def test_download_async(world: MockWorld) -> None:
    world.add_competition("digit-recognizer", {"train.csv": 10, "test.csv": 20})
    result = await kgenv.data.download_async("digit-recognizer", "gs://my-bucket/digits", backends=world, progress=False)
    assert result.bytes == 30 and result.dest == "gs://my-bucket/digits"


def test_download_validation_and_errors(world: MockWorld) -> None:
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.data.download("Not A Slug", "/data", backends=world)
    assert e.value.field == "competition"
    with pytest.raises(kgenv.ValidationError) as e:
        kgenv.data.download("titanic", "relative", backends=world)
    assert e.value.field == "dest"
    with pytest.raises(kgenv.NotFoundError, match="competition nope"):
        kgenv.data.download("nope", "/data", backends=world, progress=False)
    with pytest.raises(kgenv.NotFoundError, match="files matching"):
        kgenv.data.download("titanic", "/data", files=["*.parquet"], backends=world, progress=False)
    world.fail_next("kaggle.fetch", "transient")
    with pytest.raises(kgenv.TransientError):
        kgenv.data.download("titanic", "/data", backends=world, progress=False)
