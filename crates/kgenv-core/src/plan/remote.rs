//! The host session as a step sees it: every command it runs gets the step's time limit
//! unless the request sets its own, and a command that times out is reported as this
//! step's ([`CommandTimedOut::step`]).
//!
//! Limits are enforced where the output is seen, in the [`Remote`] implementation (the SSH
//! session kills the command's whole process group and keeps its last lines). File
//! transfers take no limit of their own, so here their future is abandoned when the step's
//! limit passes: the SSH session kills an abandoned command just the same.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::backends::remote::{ByteStream, CommandTimeout, ExecOutput, ExecRequest};
use crate::backends::{BackendResult, ProgressFn, Remote};
use crate::error::{BackendError, CommandTimedOut};

/// A step's view of the shared host session (see the module header).
pub(crate) struct StepRemote {
    inner: Arc<dyn Remote>,
    step: String,
    limit: CommandTimeout,
}

impl StepRemote {
    /// `inner` with `limit` on the commands of step `step`.
    pub(crate) fn new(inner: Arc<dyn Remote>, step: &str, limit: CommandTimeout) -> Self {
        Self {
            inner,
            step: step.to_string(),
            limit,
        }
    }

    /// Names this step in a command timeout that does not name one yet.
    fn attribute(&self, e: BackendError) -> BackendError {
        match e {
            BackendError::CommandTimeout(mut c) if c.step.is_none() => {
                c.step = Some(self.step.clone());
                BackendError::CommandTimeout(c)
            }
            other => other,
        }
    }

    /// Runs a file transfer (`what`: `write /etc/fstab`) within the step's limit, counted
    /// in all: a transfer shows no progress to measure silence by.
    async fn bounded<T>(
        &self,
        what: String,
        op: impl Future<Output = BackendResult<T>>,
    ) -> BackendResult<T> {
        match tokio::time::timeout(self.limit.after, op).await {
            Ok(r) => r.map_err(|e| self.attribute(e)),
            Err(_) => Err(BackendError::CommandTimeout(Box::new(CommandTimedOut {
                step: Some(self.step.clone()),
                command: what,
                host: self.inner.endpoint(),
                after: self.limit.after,
                inactivity: false,
                last_lines: Vec::new(),
            }))),
        }
    }
}

#[async_trait]
impl Remote for StepRemote {
    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }

    async fn exec(&self, req: ExecRequest, progress: ProgressFn<'_>) -> BackendResult<ExecOutput> {
        self.inner
            .exec(req.or_timeout(self.limit), progress)
            .await
            .map_err(|e| self.attribute(e))
    }

    async fn put_file(&self, path: &str, content: &[u8], mode: u32) -> BackendResult<()> {
        self.bounded(
            format!("write {path}"),
            self.inner.put_file(path, content, mode),
        )
        .await
    }

    async fn read_file(&self, path: &str) -> BackendResult<Option<Vec<u8>>> {
        self.bounded(format!("read {path}"), self.inner.read_file(path))
            .await
    }

    async fn open_tcp(&self, host: &str, port: u16) -> BackendResult<Box<dyn ByteStream>> {
        // A tunnel lives as long as its user needs it: no limit.
        self.inner.open_tcp(host, port).await
    }

    async fn open_unix(&self, path: &str) -> BackendResult<Box<dyn ByteStream>> {
        self.inner.open_unix(path).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// A host whose file transfers never finish and which records the requests it gets.
    #[derive(Default)]
    struct Stuck {
        seen: Mutex<Vec<ExecRequest>>,
    }

    #[async_trait]
    impl Remote for Stuck {
        fn endpoint(&self) -> String {
            "me@host:22".into()
        }
        async fn exec(&self, req: ExecRequest, _: ProgressFn<'_>) -> BackendResult<ExecOutput> {
            self.seen.lock().expect("lock").push(req);
            Err(BackendError::CommandTimeout(Box::new(CommandTimedOut {
                step: None,
                command: "mount …".into(),
                host: self.endpoint(),
                after: Duration::from_secs(1),
                inactivity: false,
                last_lines: vec!["mounting".into()],
            })))
        }
        async fn put_file(&self, _: &str, _: &[u8], _: u32) -> BackendResult<()> {
            std::future::pending().await
        }
        async fn read_file(&self, _: &str) -> BackendResult<Option<Vec<u8>>> {
            std::future::pending().await
        }
        async fn open_tcp(&self, _: &str, _: u16) -> BackendResult<Box<dyn ByteStream>> {
            Err(BackendError::other("no tunnels"))
        }
        async fn open_unix(&self, _: &str) -> BackendResult<Box<dyn ByteStream>> {
            Err(BackendError::other("no tunnels"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_get_the_step_limit_and_timeouts_name_the_step() {
        let stuck = Arc::new(Stuck::default());
        let r = StepRemote::new(
            stuck.clone(),
            "disk-mount",
            CommandTimeout::total(Duration::from_secs(60)),
        );
        let e = r
            .exec(ExecRequest::new("mount /x"), &crate::backends::no_progress)
            .await
            .expect_err("times out");
        let c = e.command_timeout().expect("a command timeout");
        assert_eq!(c.step.as_deref(), Some("disk-mount"));
        let own = ExecRequest::new("true").idle_timeout(Duration::from_secs(5));
        let _ = r.exec(own, &crate::backends::no_progress).await;
        let seen = stuck.seen.lock().expect("lock").clone();
        assert_eq!(
            (seen[0].timeout, seen[0].idle_timeout),
            (Some(Duration::from_secs(60)), None),
            "a request without a limit gets the step's"
        );
        assert_eq!(
            (seen[1].timeout, seen[1].idle_timeout),
            (None, Some(Duration::from_secs(5))),
            "a request's own limit is kept"
        );

        let e = r
            .put_file("/etc/fstab", b"x", 0o644)
            .await
            .expect_err("a transfer that never ends times out");
        let c = e.command_timeout().expect("a command timeout");
        assert_eq!(
            (c.command.as_str(), c.step.as_deref(), c.after),
            (
                "write /etc/fstab",
                Some("disk-mount"),
                Duration::from_secs(60)
            )
        );
        assert!(r.read_file("/etc/fstab").await.is_err());
    }
}
