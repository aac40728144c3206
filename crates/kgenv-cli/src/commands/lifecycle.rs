//! `plan`, `up`, `down`, `move`, `status`, `stop`, `start` and `steps`: the environment as
//! a whole.

use std::time::Duration;

use kgenv_core::runner::{DownPreview, MovePreview, RunOptions};
use kgenv_core::Error;

use super::Session;
use crate::cli::Selection;
use crate::render;

fn options(s: &Selection) -> RunOptions {
    RunOptions {
        only: s.only.clone(),
        until: s.until.clone(),
        ..RunOptions::default()
    }
}

/// `kgenv plan`.
pub async fn plan(s: &Session, select: &Selection) -> Result<(), Error> {
    let result = s.runner.plan(options(select), s.sink()).await;
    s.renderer.finish();
    let report = result?;
    if s.json {
        render::json_result(&report);
    } else {
        render::plan(&s.order(), &s.planned(), &report);
    }
    Ok(())
}

/// `kgenv up` (`--yes`: apply changes that restart the VM without asking; otherwise the
/// session's runner asks on a terminal and refuses elsewhere).
pub async fn up(
    s: &Session,
    select: &Selection,
    yes: bool,
    wait_for_capacity: Option<Option<Duration>>,
) -> Result<(), Error> {
    let mut opts = RunOptions {
        yes,
        ..options(select)
    };
    if let Some(limit) = wait_for_capacity {
        opts = opts.wait_for_capacity(limit);
    }
    let result = s.runner.up(opts, s.sink()).await;
    s.renderer.finish();
    let report = result?;
    if s.json {
        render::json_result(&report);
    } else {
        render::up(&report);
    }
    Ok(())
}

/// What `down` deletes beyond what kgenv created: named buckets and data disks.
pub struct Delete<'a> {
    /// `--delete-bucket`.
    pub buckets: &'a [String],
    /// `--delete-disk`.
    pub disks: &'a [String],
}

/// `kgenv down`: the preview of what it deletes and keeps, a question on a terminal (none
/// with `--yes`), then the teardown. Without a terminal and without `--yes` the runner
/// refuses (exit 2) and nothing changes.
pub async fn down(
    s: &Session,
    select: &Selection,
    yes: bool,
    delete: &Delete<'_>,
) -> Result<(), Error> {
    let mut opts = RunOptions {
        yes,
        ..options(select)
    };
    for b in delete.buckets {
        opts = opts.delete_bucket(b.clone());
    }
    for d in delete.disks {
        opts = opts.delete_disk(d.clone());
    }
    if yes && !s.json {
        // Said even when nobody is asked, so a script's log shows what went.
        if let Ok(preview) = s.runner.down_preview(&opts).await {
            render::down_preview(&preview);
        }
    }
    let (json, renderer) = (s.json, s.renderer.clone());
    let ask = move |preview: &DownPreview| renderer.suspend(|| render::confirm_down(preview, json));
    let result = s.runner.down_confirmed(opts, ask, s.sink()).await;
    s.renderer.finish();
    let report = result?;
    if s.json {
        render::json_result(&report);
    } else {
        render::down(&report);
    }
    Ok(())
}

/// `kgenv move ZONE`: what it will do, a question on a terminal (none with `--yes`), then
/// the move. Without a terminal and without `--yes` the runner refuses (exit 2).
pub async fn move_to(s: &Session, zone: &str, yes: bool) -> Result<(), Error> {
    let opts = RunOptions {
        yes,
        ..RunOptions::default()
    };
    if yes && !s.json {
        // Said even when nobody is asked, so a script's log shows what it did.
        if let Ok(preview) = s.runner.move_preview(zone).await {
            render::move_preview(&preview);
        }
    }
    let (json, renderer) = (s.json, s.renderer.clone());
    let ask = move |preview: &MovePreview| renderer.suspend(|| render::confirm_move(preview, json));
    let result = s.runner.move_to(zone, opts, ask, s.sink()).await;
    s.renderer.finish();
    let report = result?;
    if s.json {
        render::json_result(&report);
    } else {
        render::moved(&s.runner.env().name, zone, &report);
    }
    Ok(())
}

/// `kgenv status`.
pub async fn status(s: &Session) -> Result<(), Error> {
    let result = s.runner.status(s.sink()).await;
    s.renderer.finish();
    let status = result?;
    if s.json {
        render::json(&status);
    } else {
        render::status(&s.runner.env().name, &s.order(), &s.planned(), &status);
    }
    Ok(())
}

/// `kgenv stop`.
pub async fn stop(s: &Session) -> Result<(), Error> {
    let result = s.runner.stop(s.sink()).await;
    s.renderer.finish();
    let report = result?;
    if s.json {
        render::json_result(&report);
    } else {
        render::stopped(&s.runner.env().name, &report);
    }
    Ok(())
}

/// `kgenv start`.
pub async fn start(s: &Session, wait_for_capacity: Option<Option<Duration>>) -> Result<(), Error> {
    let opts = match wait_for_capacity {
        Some(limit) => RunOptions::default().wait_for_capacity(limit),
        None => RunOptions::default(),
    };
    let result = s.runner.start_with(opts, s.sink()).await;
    s.renderer.finish();
    let report = result?;
    if s.json {
        render::json_result(&report);
    } else {
        let addr = s.runner.host_addr().await.ok().flatten();
        render::started(&s.runner.env().name, &report, addr.as_ref());
    }
    Ok(())
}

/// `kgenv steps`.
pub fn steps(s: &Session) -> Result<(), Error> {
    let steps = s.runner.steps();
    if s.json {
        render::json(&steps);
    } else {
        render::steps(&steps);
    }
    Ok(())
}
