//! [`DockerEngine`]: the [`ContainerEngine`] on bollard's typed Engine API. It builds
//! requests and decodes answers; [`super::transport`] decides how bytes reach the engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, DeviceRequest, ExecConfig, HostConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, ResizeExecOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use super::auth::{split_reference, RegistryAuth};
use super::errors::{from_stream_message, map_err, pull_refused, refused_anonymous};
use super::progress::{build_lines, PullTracker};
use crate::backends::container::{
    BindMount, ContainerEngine, ContainerInfo, ContainerRequest, EngineImage, EngineInfo,
    LogOptions, TermSize, TtyControl, TtyExec,
};
use crate::backends::remote::ExecOutput;
use crate::backends::{BackendResult, Progress, ProgressFn, Stream as OutStream};
use crate::error::BackendError;

/// How long `remove_container` lets the main process stop before it is killed.
const STOP_GRACE_SECS: i32 = 10;

/// A Docker Engine, local or tunnelled, behind kgenv's [`ContainerEngine`] trait.
pub struct DockerEngine {
    docker: Docker,
    endpoint: String,
    auth: Arc<RegistryAuth>,
}

impl std::fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerEngine")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl DockerEngine {
    pub(crate) fn new(docker: Docker, endpoint: String, auth: Arc<RegistryAuth>) -> Self {
        Self {
            docker,
            endpoint,
            auth,
        }
    }

    /// Where the engine is (`unix:///var/run/docker.sock`, `user@host:22:/var/run/docker.sock`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bollard client, for calls kgenv's trait does not cover.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn err(&self, what: &str) -> impl Fn(bollard::errors::Error) -> BackendError + '_ {
        let what = what.to_string();
        move |e| map_err(e, &what, &self.endpoint)
    }
}

/// The `POST /containers/create` body for `req`: GPUs as a device request (driver
/// `nvidia`, count -1 for all, capabilities `[["gpu"]]`), ports on their host address only,
/// bind mounts with their propagation, the shm size, restart `unless-stopped`, an init
/// process to reap Jupyter's children, and the labels.
pub fn create_body(req: &ContainerRequest) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &req.ports {
        port_bindings
            .entry(format!("{}/tcp", p.container_port))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let mut exposed: Vec<String> = port_bindings.keys().cloned().collect();
    exposed.sort();
    let device_requests = req.gpus.map(|n| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            count: Some(if n == 0 { -1 } else { i64::from(n) }),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    let host_config = HostConfig {
        port_bindings: Some(port_bindings),
        mounts: Some(req.mounts.iter().map(bind_mount).collect()),
        shm_size: Some(i64::try_from(req.shm_size_bytes).unwrap_or(i64::MAX)),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        device_requests,
        init: Some(true),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(req.image.clone()),
        cmd: req.command.clone(),
        env: Some(req.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(
            req.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        exposed_ports: Some(exposed),
        working_dir: req.working_dir.clone(),
        host_config: Some(host_config),
        ..Default::default()
    }
}

fn bind_mount(m: &BindMount) -> Mount {
    let propagation = m.propagation.as_deref().map(|p| match p {
        "private" => MountBindOptionsPropagationEnum::PRIVATE,
        "rprivate" => MountBindOptionsPropagationEnum::RPRIVATE,
        "shared" => MountBindOptionsPropagationEnum::SHARED,
        "rshared" => MountBindOptionsPropagationEnum::RSHARED,
        "slave" => MountBindOptionsPropagationEnum::SLAVE,
        _ => MountBindOptionsPropagationEnum::RSLAVE,
    });
    Mount {
        target: Some(m.target.clone()),
        source: Some(m.source.clone()),
        typ: Some(MountType::BIND),
        read_only: Some(m.read_only),
        bind_options: propagation.map(|p| MountBindOptions {
            propagation: Some(p),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A tar build context holding only `Dockerfile`.
pub fn dockerfile_context(dockerfile: &str) -> BackendResult<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder
        .append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .and_then(|()| builder.into_inner())
        .map_err(|e| BackendError::io("writing the build context", e))
}

/// Splits output chunks into lines per stream, reporting each complete line.
#[derive(Default)]
pub(crate) struct LineSplitter {
    pending: [Vec<u8>; 2],
}

impl LineSplitter {
    pub(crate) fn push(&mut self, stream: OutStream, chunk: &[u8], progress: ProgressFn<'_>) {
        let buf = &mut self.pending[stream as usize];
        buf.extend_from_slice(chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            progress(Progress::Line {
                stream,
                line: text.trim_end_matches('\r').to_string(),
            });
        }
    }

    pub(crate) fn finish(&mut self, progress: ProgressFn<'_>) {
        for (i, stream) in [OutStream::Stdout, OutStream::Stderr]
            .into_iter()
            .enumerate()
        {
            let rest = std::mem::take(&mut self.pending[i]);
            if !rest.is_empty() {
                progress(Progress::Line {
                    stream,
                    line: String::from_utf8_lossy(&rest).into_owned(),
                });
            }
        }
    }
}

fn split_output(out: LogOutput) -> Option<(OutStream, bytes::Bytes)> {
    match out {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            Some((OutStream::Stdout, message))
        }
        LogOutput::StdErr { message } => Some((OutStream::Stderr, message)),
        LogOutput::StdIn { .. } => None,
    }
}

/// The exit code of exec `id` whose output has ended: the stream ends when the process
/// closes its output, and the engine records the exit shortly after.
async fn wait_exit(docker: &Docker, id: &str, what: &str, endpoint: &str) -> BackendResult<i64> {
    for attempt in 0..200u32 {
        let inspect = docker
            .inspect_exec(id)
            .await
            .map_err(|e| map_err(e, what, endpoint))?;
        if inspect.running != Some(true) {
            return Ok(inspect.exit_code.unwrap_or(-1));
        }
        tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 5 + 5)).await;
    }
    Err(BackendError::Timeout {
        what: format!("{what} to report its exit code"),
        after: Duration::from_secs(10),
        last_seen: Some("output closed, process still running".into()),
    })
}

/// Resizes and waits on one terminal exec.
struct DockerTty {
    docker: Docker,
    id: String,
    what: String,
    endpoint: String,
}

impl DockerTty {
    /// Sets the size the terminal starts with. The engine refuses a resize until the
    /// process runs, a moment after the start returned, so this tries a few times (as the
    /// docker CLI does) and goes on at the engine's default size if it never takes.
    async fn initial_size(&self, size: TermSize) {
        let mut last = None;
        for attempt in 0..10u64 {
            match self.resize(size).await {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(10 * (attempt + 1))).await;
        }
        if let Some(e) = last {
            tracing::warn!(
                "{}: could not set the terminal size ({e}); using the engine's default",
                self.what
            );
        }
    }
}

#[async_trait]
impl TtyControl for DockerTty {
    async fn resize(&self, size: TermSize) -> BackendResult<()> {
        let opts = ResizeExecOptionsBuilder::new()
            .h(i32::from(size.rows))
            .w(i32::from(size.cols))
            .build();
        self.docker
            .resize_exec(&self.id, opts)
            .await
            .map_err(|e| map_err(e, &self.what, &self.endpoint))
    }

    async fn exit_code(&self) -> BackendResult<i64> {
        wait_exit(&self.docker, &self.id, &self.what, &self.endpoint).await
    }
}

impl DockerEngine {
    /// One `POST /images/create`, its stream drained into `progress`; `credentials` go in
    /// its `X-Registry-Auth` header, none at all when `None`.
    async fn pull_once(
        &self,
        reference: &str,
        credentials: Option<DockerCredentials>,
        progress: ProgressFn<'_>,
    ) -> Result<(), bollard::errors::Error> {
        let (repo, tag) = split_reference(reference);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(repo)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, credentials);
        let mut tracker = PullTracker::new();
        while let Some(ev) = stream.next().await {
            let ev = ev?;
            if let Some(error) = ev.error_detail.as_ref().and_then(|d| d.message.clone()) {
                return Err(bollard::errors::Error::DockerStreamError { error });
            }
            for p in tracker.on_event(&ev) {
                progress(p);
            }
        }
        Ok(())
    }

    /// The images a Dockerfile builds `FROM` (not `scratch`, not an earlier stage).
    fn from_images(dockerfile: &str) -> Vec<String> {
        let mut stages: Vec<String> = Vec::new();
        let mut images = Vec::new();
        for line in dockerfile.lines() {
            let mut words = line.split_whitespace();
            if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
                continue;
            }
            let image = words
                .by_ref()
                .find(|w| !w.starts_with("--"))
                .unwrap_or_default();
            if !image.is_empty() && image != "scratch" && !stages.iter().any(|s| s == image) {
                images.push(image.to_string());
            }
            if words.next().is_some_and(|w| w.eq_ignore_ascii_case("AS")) {
                stages.extend(words.next().map(str::to_string));
            }
        }
        images
    }
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    async fn inspect_image(&self, reference: &str) -> BackendResult<Option<EngineImage>> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => {
                let config = img.config.unwrap_or_default();
                Ok(Some(EngineImage {
                    id: img.id.unwrap_or_default(),
                    labels: config.labels.unwrap_or_default().into_iter().collect(),
                    env: config.env.unwrap_or_default(),
                }))
            }
            Err(e) => match self.err(&format!("image {reference}"))(e) {
                BackendError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Pulls anonymously; only when the registry refuses that (401/403, "unauthorized",
    /// "denied") it pulls once more with [`RegistryAuth::credentials_for`] (a read-only token
    /// for Google's registries), so no credential reaches the engine for a public image.
    async fn pull_image(&self, reference: &str, progress: ProgressFn<'_>) -> BackendResult<()> {
        let what = format!("image {reference}");
        let refused = match self.pull_once(reference, None, progress).await {
            Ok(()) => return Ok(()),
            Err(e) if refused_anonymous(&e) => e,
            Err(e) => return Err(map_err(e, &what, &self.endpoint)),
        };
        let Some(credentials) = self.auth.credentials_for(reference).await? else {
            return Err(pull_refused(&refused, &what, false));
        };
        tracing::info!("{what}: the registry refused an anonymous pull; pulling with credentials");
        match self.pull_once(reference, Some(credentials), progress).await {
            Ok(()) => Ok(()),
            Err(e) if refused_anonymous(&e) => Err(pull_refused(&e, &what, true)),
            Err(e) => Err(map_err(e, &what, &self.endpoint)),
        }
    }

    async fn build_image(
        &self,
        tag: &str,
        dockerfile: &str,
        labels: &BTreeMap<String, String>,
        progress: ProgressFn<'_>,
    ) -> BackendResult<()> {
        let what = format!("image {tag}");
        let context = dockerfile_context(dockerfile)?;
        let labels: HashMap<String, String> =
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .build();
        // The bases are pulled first, the way every pull goes (anonymously, credentials only
        // if refused), so the build itself is given no registry credentials at all.
        for base in Self::from_images(dockerfile) {
            if self.inspect_image(&base).await?.is_none() {
                self.pull_image(&base, progress).await?;
            }
        }
        let mut stream =
            self.docker
                .build_image(opts, None, Some(bollard::body_full(context.into())));
        while let Some(ev) = stream.next().await {
            let ev = ev.map_err(self.err(&what))?;
            if let Some(msg) = ev.error_detail.as_ref().and_then(|d| d.message.clone()) {
                return Err(from_stream_message(&msg, &what, &self.endpoint));
            }
            for p in build_lines(&ev) {
                progress(p);
            }
        }
        Ok(())
    }

    async fn inspect_container(&self, name: &str) -> BackendResult<Option<ContainerInfo>> {
        match self
            .docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(c) => {
                let config = c.config.unwrap_or_default();
                Ok(Some(ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .name
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    image: config.image.unwrap_or_default(),
                    running: c.state.and_then(|s| s.running).unwrap_or(false),
                    labels: config.labels.unwrap_or_default().into_iter().collect(),
                }))
            }
            Err(e) => match self.err(&format!("container {name}"))(e) {
                BackendError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn create_container(&self, req: &ContainerRequest) -> BackendResult<String> {
        let opts = CreateContainerOptionsBuilder::default()
            .name(&req.name)
            .build();
        let created = self
            .docker
            .create_container(Some(opts), create_body(req))
            .await
            // The container does not exist yet: a 404 is about its image.
            .map_err(self.err(&format!("image {} for container {}", req.image, req.name)))?;
        for w in created.warnings {
            tracing::warn!("docker: creating {}: {w}", req.name);
        }
        Ok(created.id)
    }

    async fn start_container(&self, name: &str) -> BackendResult<()> {
        self.docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(self.err(&format!("container {name}")))
    }

    async fn remove_container(&self, name: &str) -> BackendResult<()> {
        let what = format!("container {name}");
        let stop = StopContainerOptionsBuilder::default()
            .t(STOP_GRACE_SECS)
            .build();
        match self
            .docker
            .stop_container(name, Some(stop))
            .await
            .map_err(self.err(&what))
        {
            Ok(()) | Err(BackendError::InvalidArgument { .. }) => {}
            Err(e) => return Err(e),
        }
        let rm = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        self.docker
            .remove_container(name, Some(rm))
            .await
            .map_err(self.err(&what))
    }

    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        progress: ProgressFn<'_>,
    ) -> BackendResult<ExecOutput> {
        let what = format!("exec in container {container}");
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container, config)
            .await
            .map_err(self.err(&what))?;
        let start = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&created.id, Some(start))
            .await
            .map_err(self.err(&what))?
        else {
            return Err(BackendError::other(format!(
                "{what}: the engine detached an attached exec"
            )));
        };
        let mut out = ExecOutput::default();
        let mut lines = LineSplitter::default();
        while let Some(chunk) = output.next().await {
            let Some((stream, bytes)) = split_output(chunk.map_err(self.err(&what))?) else {
                continue;
            };
            match stream {
                OutStream::Stdout => out.stdout.extend_from_slice(&bytes),
                OutStream::Stderr => out.stderr.extend_from_slice(&bytes),
            }
            lines.push(stream, &bytes, progress);
        }
        lines.finish(progress);
        out.exit_code = wait_exit(&self.docker, &created.id, &what, &self.endpoint).await?;
        Ok(out)
    }

    async fn exec_tty(
        &self,
        container: &str,
        cmd: &[String],
        env: &[String],
        size: TermSize,
    ) -> BackendResult<TtyExec> {
        let what = format!("terminal in container {container}");
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(true),
            cmd: Some(cmd.to_vec()),
            env: Some(env.to_vec()),
            // Engines from API 1.42 start the terminal at this size; older ones ignore it and
            // get the resize below.
            console_size: Some(vec![usize::from(size.rows), usize::from(size.cols)]),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container, config)
            .await
            .map_err(self.err(&what))?;
        let start = StartExecOptions {
            detach: false,
            tty: true,
            output_capacity: None,
        };
        let StartExecResults::Attached { output, input } = self
            .docker
            .start_exec(&created.id, Some(start))
            .await
            .map_err(self.err(&what))?
        else {
            return Err(BackendError::other(format!(
                "{what}: the engine detached an attached exec"
            )));
        };
        let control = DockerTty {
            docker: self.docker.clone(),
            id: created.id,
            what: what.clone(),
            endpoint: self.endpoint.clone(),
        };
        control.initial_size(size).await;
        let endpoint = self.endpoint.clone();
        let output = output.filter_map(move |chunk| {
            let item = match chunk {
                Ok(out) => split_output(out).map(|(_, bytes)| Ok(bytes)),
                Err(e) => Some(Err(map_err(e, &what, &endpoint))),
            };
            std::future::ready(item)
        });
        Ok(TtyExec {
            input,
            output: Box::pin(output),
            control: Box::new(control),
        })
    }

    async fn logs(
        &self,
        container: &str,
        opts: LogOptions,
        progress: ProgressFn<'_>,
    ) -> BackendResult<()> {
        let what = format!("logs of container {container}");
        let tail = opts
            .tail
            .map_or_else(|| "all".to_string(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .follow(opts.follow)
            .stdout(true)
            .stderr(true)
            .timestamps(opts.timestamps)
            .tail(&tail)
            .build();
        let mut stream = self.docker.logs(container, Some(options));
        let mut lines = LineSplitter::default();
        while let Some(chunk) = stream.next().await {
            if let Some((s, bytes)) = split_output(chunk.map_err(self.err(&what))?) {
                lines.push(s, &bytes, progress);
            }
        }
        lines.finish(progress);
        Ok(())
    }

    async fn info(&self) -> BackendResult<EngineInfo> {
        let info = self.docker.info().await.map_err(self.err("engine info"))?;
        let version = self
            .docker
            .version()
            .await
            .map_err(self.err("engine version"))?;
        let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        runtimes.sort();
        let api = self.docker.client_version();
        Ok(EngineInfo {
            version: version.version.unwrap_or_default(),
            api_version: format!("{}.{}", api.major_version, api.minor_version),
            runtimes,
            default_runtime: info.default_runtime.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::container::PortPublish;

    fn request(gpus: Option<u32>) -> ContainerRequest {
        ContainerRequest {
            name: "kgenv-kg".into(),
            image: "gcr.io/kaggle-gpu-images/python:latest".into(),
            gpus,
            ports: vec![PortPublish {
                container_port: 8888,
                host_port: 18888,
                host_ip: "127.0.0.1".into(),
            }],
            mounts: vec![BindMount {
                source: "/mnt/gcs".into(),
                target: "/mnt/gcs".into(),
                read_only: false,
                propagation: Some("rslave".into()),
            }],
            shm_size_bytes: 16 << 30,
            env: BTreeMap::from([("A".to_string(), "1".to_string())]),
            labels: BTreeMap::from([("kgenv-env".to_string(), "kg".to_string())]),
            command: Some(vec!["sleep".into(), "1".into()]),
            working_dir: Some("/kaggle/working".into()),
        }
    }

    #[test]
    fn create_body_has_the_engine_api_shape() {
        let body = serde_json::to_value(create_body(&request(Some(0)))).expect("json");
        let hc = &body["HostConfig"];
        assert_eq!(
            hc["DeviceRequests"],
            serde_json::json!([{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}])
        );
        assert_eq!(
            hc["PortBindings"],
            serde_json::json!({"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18888"}]})
        );
        assert_eq!(body["ExposedPorts"], serde_json::json!({"8888/tcp": {}}));
        assert_eq!(hc["Mounts"][0]["BindOptions"]["Propagation"], "rslave");
        assert_eq!(hc["Mounts"][0]["Type"], "bind");
        assert_eq!(hc["ShmSize"], 16i64 << 30);
        assert_eq!(hc["RestartPolicy"]["Name"], "unless-stopped");
        assert_eq!(hc["Init"], true);
        assert_eq!(body["Env"], serde_json::json!(["A=1"]));
        assert_eq!(body["WorkingDir"], "/kaggle/working");
        let two = serde_json::to_value(create_body(&request(Some(2)))).expect("json");
        assert_eq!(two["HostConfig"]["DeviceRequests"][0]["Count"], 2);
        let none = serde_json::to_value(create_body(&request(None))).expect("json");
        assert!(none["HostConfig"].get("DeviceRequests").is_none(), "{none}");
    }

    #[test]
    fn from_images_skip_scratch_and_stages() {
        assert_eq!(
            DockerEngine::from_images(
                "FROM gcr.io/p/base:1 AS build\nRUN x\nfrom --platform=linux/amd64 scratch\nFROM build\nFROM busybox\n"
            ),
            vec!["gcr.io/p/base:1".to_string(), "busybox".to_string()]
        );
    }

    #[test]
    fn the_build_context_is_a_tar_with_the_dockerfile() {
        let tar_bytes = dockerfile_context("FROM scratch\n").expect("tar");
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut entries = archive.entries().expect("entries");
        let mut first = entries.next().expect("one entry").expect("readable");
        assert_eq!(first.path().expect("path").to_str(), Some("Dockerfile"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut first, &mut text).expect("text");
        assert_eq!(text, "FROM scratch\n");
    }

    #[test]
    fn output_is_split_into_lines_per_stream() {
        let seen = std::sync::Mutex::new(Vec::new());
        let sink = |p: Progress| seen.lock().expect("lock").push(p);
        let mut s = LineSplitter::default();
        s.push(OutStream::Stdout, b"a\nb", &sink);
        s.push(OutStream::Stderr, b"e1\r\n", &sink);
        s.push(OutStream::Stdout, b"c\n", &sink);
        s.push(OutStream::Stdout, b"tail", &sink);
        s.finish(&sink);
        let got: Vec<(OutStream, String)> = seen
            .into_inner()
            .expect("lock")
            .into_iter()
            .filter_map(|p| match p {
                Progress::Line { stream, line } => Some((stream, line)),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (OutStream::Stdout, "a".into()),
                (OutStream::Stderr, "e1".into()),
                (OutStream::Stdout, "bc".into()),
                (OutStream::Stdout, "tail".into())
            ]
        );
    }
}
