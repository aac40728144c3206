//! The Rust surface of kgenv's verbs: every entry of `runner::VERBS` is called through the
//! runner on the simulated world, in the order a user would. The `match` in [`call`] has
//! no wildcard, so a verb added to the core without a Rust call does not compile; the CLI
//! (`kgenv-cli/tests/cli.rs`) and Python (`tests/python/test_verbs.py`) walk the same list.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Once};

use kgenv_core::mock::MockWorld;
use kgenv_core::runner::data::{self, PullOptions};
use kgenv_core::runner::{
    hash_password, verify_password, Event, ExecRequest, LogOptions, Outcome, RunOptions, Runner,
    Verb, VERBS,
};

fn home() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("kgenv-verbs-{}", std::process::id()));
        std::env::set_var("KGENV_HOME", dir);
        std::env::set_var("KGENV_JUPYTER_PASSWORD", "verbs-test-password");
    });
}

struct Rig {
    world: MockWorld,
    runner: Runner,
    events: Arc<Mutex<Vec<Event>>>,
    _state: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Rig {
    fn sink(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let events = self.events.clone();
        move |e| events.lock().unwrap_or_else(|p| p.into_inner()).push(e)
    }
}

/// Calls `verb` and checks what it did.
async fn call(verb: Verb, rig: &Rig) {
    let r = &rig.runner;
    match verb {
        Verb::Plan => {
            let plan = r
                .plan(RunOptions::default(), rig.sink())
                .await
                .expect("plan");
            assert!(plan.planned_changes() > 0, "{plan:?}");
        }
        Verb::Up => {
            let up = r.up(RunOptions::default(), rig.sink()).await.expect("up");
            assert!(up.changed() > 5, "{up:?}");
        }
        Verb::Status => {
            let s = r.status(rig.sink()).await.expect("status");
            assert!(!s.state.is_empty());
        }
        Verb::Ssh => {
            let out = r
                .ssh(ExecRequest::new("true"), rig.sink())
                .await
                .expect("ssh");
            assert!(out.success());
        }
        Verb::Exec => {
            let out = r
                .exec(&["echo".into(), "from rust".into()], rig.sink())
                .await
                .expect("exec");
            assert_eq!(out.stdout_text().trim(), "from rust");
        }
        Verb::Logs => {
            r.logs(LogOptions::default(), rig.sink())
                .await
                .expect("logs");
        }
        Verb::Gpu => {
            let g = r.gpu_report().await.expect("gpu");
            assert!(g.usable(), "{g:?}");
        }
        Verb::Jupyter => {
            let t = r.jupyter(0).await.expect("jupyter");
            assert!(t.tunnelled() && t.port() != 0);
            assert!(t.url().starts_with("https://127.0.0.1:"), "{}", t.url());
            assert!(t.cert_sha256().is_some());
            t.close();
        }
        Verb::Autostop => {
            r.autostop(Some(20), rig.sink()).await.expect("autostop");
            let state = r.state().await.expect("state");
            assert_eq!(state.fact("autostop", "idle_minutes"), Some("20"));
        }
        Verb::Stop => {
            let s = r.stop(rig.sink()).await.expect("stop");
            assert_eq!(s.outcome("instance"), Some(&Outcome::Changed));
        }
        Verb::Start => {
            let s = r.start(rig.sink()).await.expect("start");
            assert_eq!(s.outcome("instance"), Some(&Outcome::Changed));
        }
        Verb::Down => {
            let preview = r
                .down_preview(&RunOptions::default())
                .await
                .expect("preview");
            assert!(!preview.deletes_nothing(), "{preview}");
            // What the CLI does without a terminal and Python without `yes=True`.
            let refused = r
                .down_confirmed(RunOptions::default(), |_| false, rig.sink())
                .await
                .expect_err("not confirmed");
            assert!(refused.is_not_confirmed() && refused.is_config());
            assert!(!r.state().await.expect("state").is_empty());
            r.down_confirmed(RunOptions::default(), |p| p == &preview, rig.sink())
                .await
                .expect("down");
            // Only the data disk (kept unless named) is still recorded as standing.
            let left = r.state().await.expect("state");
            let standing: Vec<&str> = left
                .steps
                .iter()
                .filter(|(_, rec)| !rec.created.is_empty())
                .map(|(id, _)| id.as_str())
                .collect();
            assert_eq!(standing, ["data-disk"], "{left:#?}");
        }
        Verb::Move => {
            let state = r.state().await.expect("state");
            let from = state
                .fact("data-disk", "zone")
                .expect("a data disk")
                .to_string();
            let to = if from == "us-central1-b" {
                "us-central1-c"
            } else {
                "us-central1-b"
            };
            let refused = r
                .move_to(to, RunOptions::default(), |_| false, rig.sink())
                .await
                .expect_err("not confirmed");
            assert!(refused.is_not_confirmed(), "{refused}");
            let preview = r.move_preview(to).await.expect("preview");
            assert_eq!(preview.from_zone, from);
            let moved = r
                .move_to(to, RunOptions::default(), |p| p == &preview, rig.sink())
                .await
                .expect("move");
            assert_eq!(moved.operation, "move");
            let state = r.state().await.expect("state");
            assert_eq!(state.fact("data-disk", "zone"), Some(to));
            assert_eq!(state.fact("instance", "zone"), Some(to));
            assert!(state.step("move").is_none());
        }
        Verb::DataList => {
            let files = data::list(rig.world.backends().kaggle.as_ref(), "titanic")
                .await
                .expect("list");
            assert!(files.iter().any(|f| f.name == "train.csv"), "{files:?}");
        }
        Verb::DataPull => {
            let dest = rig.data.path().join("titanic");
            let opts = PullOptions::new(dest.display().to_string()).files("*.csv");
            let kaggle = rig.world.backends().kaggle;
            let first = data::pull(kaggle.as_ref(), "titanic", &opts, rig.sink())
                .await
                .expect("pull");
            assert!(!first.fetched.is_empty() && first.skipped.is_empty());
            let again = data::pull(kaggle.as_ref(), "titanic", &opts, rig.sink())
                .await
                .expect("pull again");
            assert!(again.fetched.is_empty() && again.skipped.len() == first.fetched.len());
        }
        Verb::HashPassword => {
            let h = hash_password("a password").expect("hash");
            assert!(verify_password("a password", &h));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_works_through_the_runner() {
    home();
    let env = kgenv_core::config::load("../../examples/kgenv.toml".as_ref()).expect("example");
    let world = MockWorld::new();
    let state = tempfile::tempdir().expect("state");
    let rig = Rig {
        runner: Runner::new(env, world.backends()).state_dir(state.path()),
        world,
        events: Arc::default(),
        _state: state,
        data: tempfile::tempdir().expect("data"),
    };
    // The order a user would go in; `down` last.
    let order = [
        Verb::HashPassword,
        Verb::DataList,
        Verb::DataPull,
        Verb::Plan,
        Verb::Up,
        Verb::Status,
        Verb::Ssh,
        Verb::Exec,
        Verb::Logs,
        Verb::Gpu,
        Verb::Jupyter,
        Verb::Autostop,
        Verb::Stop,
        Verb::Start,
        Verb::Move,
        Verb::Down,
    ];
    let listed: BTreeSet<String> = VERBS.iter().map(|v| format!("{:?}", v.verb)).collect();
    let called: BTreeSet<String> = order.iter().map(|v| format!("{v:?}")).collect();
    assert_eq!(listed, called, "every verb of runner::VERBS is called here");
    for verb in order {
        call(verb, &rig).await;
    }
}
