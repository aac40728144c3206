//! `data list`, `data pull` (no environment needed) and the hidden `data agent` the data
//! step runs on a VM.

use std::sync::Arc;

use kgenv_core::runner::data::{self, PullOptions};
use kgenv_core::runner::Event;
use kgenv_core::{wiring, Error};

use crate::cli::{DataCommand, Global};
use crate::render::{self, Renderer};

/// `kgenv data …`.
pub async fn run(command: &DataCommand, global: &Global) -> Result<(), Error> {
    let json = global.json;
    match command {
        DataCommand::Agent => std::process::exit(kgenv_core::kaggle::agent_main().await),
        DataCommand::List { competition } => {
            let files = data::list(wiring::kaggle_from_env().as_ref(), competition).await?;
            if json {
                render::json(&files);
            } else {
                render::data_files(&files);
            }
            Ok(())
        }
        DataCommand::Pull {
            competition,
            dest,
            files,
            extract,
        } => {
            let mut opts = PullOptions::new(dest.clone()).extract(*extract);
            for g in files {
                opts = opts.files(g.clone());
            }
            // Per-file lines are what a pull has to say: shown without -v.
            let renderer = Arc::new(Renderer::new(json, true));
            let sink = {
                let renderer = renderer.clone();
                move |e: Event| renderer.event(&e)
            };
            let kaggle = wiring::kaggle_from_env();
            let result = data::pull(kaggle.as_ref(), competition, &opts, sink).await;
            renderer.finish();
            let report = result?;
            if json {
                render::json_result(&report);
            } else {
                render::pulled(&report);
            }
            Ok(())
        }
    }
}
