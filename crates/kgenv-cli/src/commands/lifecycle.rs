//! `plan`, `up`, `down`, `status`, `stop`, `start` and `steps`: the environment as a whole.

use kgenv_core::runner::RunOptions;
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

/// `kgenv up`.
pub async fn up(s: &Session, select: &Selection) -> Result<(), Error> {
    let result = s.runner.up(options(select), s.sink()).await;
    s.renderer.finish();
    let report = result?;
    if s.json {
        render::json_result(&report);
    } else {
        render::up(&report);
    }
    Ok(())
}

/// `kgenv down`.
pub async fn down(s: &Session, select: &Selection, delete_bucket: &[String]) -> Result<(), Error> {
    let mut opts = options(select);
    for b in delete_bucket {
        opts = opts.delete_bucket(b.clone());
    }
    let result = s.runner.down(opts, s.sink()).await;
    s.renderer.finish();
    let report = result?;
    if s.json {
        render::json_result(&report);
    } else {
        render::down(&report);
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
pub async fn start(s: &Session) -> Result<(), Error> {
    let result = s.runner.start(s.sink()).await;
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
