//! What a container sees of the GPU: the probe kgenv runs in a container and the typed
//! [`GpuReport`] it yields.
//!
//! One `exec` runs [`PROBE`] in the container: `nvidia-smi` (GPUs, driver and CUDA
//! versions), where `libcuda` is found along `LD_LIBRARY_PATH` (a CUDA stub directory ahead
//! of the driver's library is docker-python issue 361, the guide's manual
//! `LD_LIBRARY_PATH` fix), and `torch.cuda.is_available()` when the image has PyTorch.
//! Shared by the `gpu` step, `kgenv gpu` (the runner's GPU report) and the mock engine,
//! which answers the probe as a host with GPUs would.

use serde::{Deserialize, Serialize};

use crate::backends::container::ContainerEngine;
use crate::backends::BackendResult;
use crate::error::BackendError;

/// One GPU as `nvidia-smi` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Model (`Tesla T4`).
    pub name: String,
    /// Driver version (`550.54.15`).
    pub driver_version: String,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
}

/// What the GPU check saw in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuReport {
    /// GPUs visible inside the container.
    pub gpus: Vec<GpuInfo>,
    /// The driver version (of the first GPU).
    pub driver_version: Option<String>,
    /// The highest CUDA version the driver supports (`nvidia-smi`'s header).
    pub cuda_version: Option<String>,
    /// `torch.cuda.is_available()`; `None` when the image has no PyTorch (or no Python).
    pub torch_cuda: Option<bool>,
    /// The CUDA stub directory whose `libcuda` is found first along `LD_LIBRARY_PATH`, when
    /// one shadows the driver's library.
    pub stub_shadowing: Option<String>,
    /// `LD_LIBRARY_PATH` inside the container.
    pub ld_library_path: Option<String>,
    /// Why no GPU was seen (`nvidia-smi` missing or failing), for messages.
    pub problem: Option<String>,
}

impl GpuReport {
    /// Whether at least one GPU is visible and nothing stops PyTorch from using it.
    pub fn usable(&self) -> bool {
        !self.gpus.is_empty() && self.stub_shadowing.is_none() && self.torch_cuda != Some(false)
    }

    /// One line per finding, for logs and `status`.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .gpus
            .iter()
            .map(|g| {
                format!(
                    "GPU: {} (driver {}, {} MiB)",
                    g.name,
                    g.driver_version,
                    g.memory_mib.map_or("?".into(), |m| m.to_string())
                )
            })
            .collect();
        if let Some(c) = &self.cuda_version {
            out.push(format!("CUDA (driver): {c}"));
        }
        if let Some(t) = self.torch_cuda {
            out.push(format!("torch.cuda.is_available(): {t}"));
        }
        if let Some(d) = &self.stub_shadowing {
            out.push(format!(
                "CUDA stub library in {d} shadows the driver's libcuda (LD_LIBRARY_PATH={})",
                self.ld_library_path.as_deref().unwrap_or("")
            ));
        }
        if let Some(p) = &self.problem {
            out.push(format!("no GPU: {p}"));
        }
        out
    }
}

/// The probe run in the container. Static text (no value is interpolated), printed as
/// tagged lines that [`parse_probe`] reads.
pub const PROBE: &str = r#"echo "@ldpath ${LD_LIBRARY_PATH-}"
IFS=:
for d in ${LD_LIBRARY_PATH-}; do for f in "$d"/libcuda.so*; do [ -e "$f" ] && echo "@libcuda $f"; done; done
unset IFS
if command -v nvidia-smi >/dev/null 2>&1; then
  q=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader,nounits 2>&1); echo "@smi_rc $?"
  echo "$q" | while IFS= read -r l; do echo "@gpu $l"; done
  nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/@cuda \1/p'
else
  echo "@nosmi"
fi
for py in python3 python; do
  if command -v "$py" >/dev/null 2>&1; then
    "$py" -c 'import torch; print("@torch", torch.cuda.is_available())' 2>/dev/null || echo "@notorch"
    break
  fi
done
"#;

/// Reads [`PROBE`]'s output.
pub fn parse_probe(stdout: &str) -> GpuReport {
    let mut r = GpuReport::default();
    let mut smi_ok = true;
    let mut smi_text = Vec::new();
    let mut libcuda_dirs: Vec<String> = Vec::new();
    for line in stdout.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match tag {
            "@ldpath" => r.ld_library_path = Some(rest.to_string()).filter(|s| !s.is_empty()),
            "@libcuda" => {
                let dir = rest.rsplit_once('/').map_or(rest, |(d, _)| d).to_string();
                if !libcuda_dirs.contains(&dir) {
                    libcuda_dirs.push(dir);
                }
            }
            "@smi_rc" => smi_ok = rest == "0",
            "@gpu" if !rest.is_empty() => {
                let f: Vec<&str> = rest.split(',').map(str::trim).collect();
                match (smi_ok, f.as_slice()) {
                    (true, [name, driver, mem]) => r.gpus.push(GpuInfo { name: name.to_string(), driver_version: driver.to_string(), memory_mib: mem.parse().ok() }),
                    _ => smi_text.push(rest.to_string()),
                }
            }
            "@cuda" if !rest.is_empty() => r.cuda_version = Some(rest.to_string()),
            "@nosmi" => r.problem = Some("nvidia-smi is not in the container (no GPU was given to it, or the image lacks the NVIDIA tools)".into()),
            "@torch" => r.torch_cuda = Some(rest == "True"),
            _ => {}
        }
    }
    if r.gpus.is_empty() && r.problem.is_none() {
        r.problem = Some(if smi_text.is_empty() {
            "nvidia-smi lists no GPU".into()
        } else {
            format!("nvidia-smi failed: {}", smi_text.join(" "))
        });
    }
    r.driver_version = r.gpus.first().map(|g| g.driver_version.clone());
    // The loader takes the first `libcuda` along LD_LIBRARY_PATH: a stub there shadows the driver.
    r.stub_shadowing = libcuda_dirs.first().filter(|d| is_stub_dir(d)).cloned();
    r
}

/// Runs the probe in `container` and reports what it saw.
pub async fn gpu_report(engine: &dyn ContainerEngine, container: &str) -> BackendResult<GpuReport> {
    let cmd = vec!["sh".to_string(), "-c".to_string(), PROBE.to_string()];
    let out = engine
        .exec(container, &cmd, &crate::backends::no_progress)
        .await?;
    if !out.success() {
        return Err(BackendError::CommandFailed {
            command: format!("GPU probe in {container}"),
            exit_code: out.exit_code,
            stderr_tail: out.stderr_tail(),
        });
    }
    Ok(parse_probe(&out.stdout_text()))
}

/// [`gpu_report`] bounded by `limit`: the probe goes through the engine's API, not SSH, so
/// the limit every remote command has is put on it here (`nvidia-smi` hangs on a GPU whose
/// driver is in a bad state). Past it, a [`BackendError::CommandTimeout`] naming the probe
/// and `host`; the process in the container is left to end on its own (the engine's API
/// cannot kill an exec).
pub async fn gpu_report_within(
    engine: &dyn ContainerEngine,
    container: &str,
    limit: std::time::Duration,
    host: &str,
) -> BackendResult<GpuReport> {
    match tokio::time::timeout(limit, gpu_report(engine, container)).await {
        Ok(report) => report,
        Err(_) => Err(BackendError::CommandTimeout(Box::new(
            crate::error::CommandTimedOut {
                step: None,
                command: format!("GPU probe in {container} (nvidia-smi, torch.cuda)"),
                host: host.to_string(),
                after: limit,
                inactivity: false,
                last_lines: Vec::new(),
            },
        ))),
    }
}

/// Whether a library directory is one of CUDA's link-time stub directories.
pub fn is_stub_dir(dir: &str) -> bool {
    dir.trim_end_matches('/').ends_with("/stubs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_t4_with_torch_is_usable() {
        let out = "@ldpath /usr/local/nvidia/lib64:/usr/local/cuda/lib64\n@libcuda /usr/local/nvidia/lib64/libcuda.so.1\n@smi_rc 0\n@gpu Tesla T4, 550.54.15, 15360\n@cuda 12.4\n@torch True\n";
        let r = parse_probe(out);
        assert_eq!(
            r.gpus,
            vec![GpuInfo {
                name: "Tesla T4".into(),
                driver_version: "550.54.15".into(),
                memory_mib: Some(15360)
            }]
        );
        assert_eq!(r.cuda_version.as_deref(), Some("12.4"));
        assert_eq!(r.driver_version.as_deref(), Some("550.54.15"));
        assert_eq!(r.torch_cuda, Some(true));
        assert!(r.usable(), "{r:?}");
    }

    #[test]
    fn a_stub_ahead_of_the_driver_is_detected() {
        let out = "@ldpath /usr/local/cuda/lib64/stubs:/usr/local/nvidia/lib64\n@libcuda /usr/local/cuda/lib64/stubs/libcuda.so\n@libcuda /usr/local/nvidia/lib64/libcuda.so.1\n@smi_rc 0\n@gpu Tesla T4, 550.54.15, 15360\n@torch False\n";
        let r = parse_probe(out);
        assert_eq!(
            r.stub_shadowing.as_deref(),
            Some("/usr/local/cuda/lib64/stubs")
        );
        assert!(!r.usable());
        let behind = parse_probe("@libcuda /usr/lib/x86_64-linux-gnu/libcuda.so.1\n@libcuda /usr/local/cuda/lib64/stubs/libcuda.so\n@smi_rc 0\n@gpu A, 1, 2\n");
        assert_eq!(
            behind.stub_shadowing, None,
            "a stub after the driver does not shadow it"
        );
    }

    #[test]
    fn no_gpu_is_reported_plainly() {
        let r = parse_probe("@ldpath \n@nosmi\n@notorch\n");
        assert!(r.gpus.is_empty());
        assert!(
            r.problem
                .as_deref()
                .is_some_and(|p| p.contains("nvidia-smi is not in the container")),
            "{r:?}"
        );
        assert_eq!(r.torch_cuda, None);
        let failed = parse_probe("@smi_rc 9\n@gpu NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n");
        assert!(
            failed
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("couldn't communicate")),
            "{failed:?}"
        );
    }
}
