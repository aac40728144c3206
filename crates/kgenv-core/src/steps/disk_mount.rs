//! The data disk on the host (issue 12): the persistent disk the `data-disk` step attaches
//! to the VM under the device name [`DATA_DEVICE_NAME`] becomes the environment's data root,
//! `/var/lib/kgenv/<env>` — the container's `/kaggle/input` and `/kaggle/working`, Jupyter's
//! config, the GitHub key and gcsfuse's file cache — so the user's work outlives the VM and
//! its boot disk.
//!
//! The host script ([`DiskMountScript`]), run as root:
//! - waits, bounded and with a progress line every 10 s, for the device to appear
//!   (`/dev/disk/by-id/google-kgenv-data`: GCE names a disk's by-id link after its device
//!   name, and udev makes it a little after the attach);
//! - asks `blkid -p` what the disk holds: nothing at all → `mkfs.ext4` (label
//!   [`FS_LABEL`], no reserved blocks, inode tables written now: GCE's advice for a data
//!   disk); a file system of any type → mounted as it is, NEVER formatted; a partition
//!   table without a file system, or an answer blkid is unsure of → an error, nothing
//!   written;
//! - puts `UUID=… <root> <type> discard,defaults,nofail 0 2` in `/etc/fstab` (replaced
//!   atomically, [`super::script::FSTAB_SET_FN`]; `nofail` so a VM whose disk is missing
//!   still boots and stays reachable), and mounts it through that entry;
//! - on a VM that kept its data on the boot disk before (a data root with files in it, a
//!   new empty disk), copies the data root onto the disk before mounting it there, so the
//!   work does not disappear under the mount (a marker file makes an interrupted copy
//!   resume on the next run; the boot disk's copy stays, hidden, until the VM is remade);
//! - makes `input/`, `working/` (owned by the login user, writable by the container, which
//!   runs as root) and gcsfuse's cache directory on it.
//!
//! `check` only reads (`blkid -p`, `mountpoint`, the fstab): satisfied when the data root
//! has the device's file system mounted and the fstab holds its UUID entry. `destroy` does
//! nothing on the host: `down` deletes the VM and its boot disk, and the data disk — with
//! its file system and the user's work — is kept for the next `up` to reattach.

use async_trait::async_trait;

use super::bucket_mount::fstab_escape;
use super::script::{HostScript, ScriptBuilder, FSTAB_SET_FN};
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::Env;

/// The device name the data disk is attached with (the instance's `disks[].deviceName`).
pub const DATA_DEVICE_NAME: &str = "kgenv-data";
/// Where GCE's udev rules link attached disks by device name (`google-<deviceName>`).
pub const DEVICE_DIR: &str = "/dev/disk/by-id";
/// The label of a file system kgenv makes on the data disk (ext4 allows 16 bytes).
pub const FS_LABEL: &str = "kgenv-data";
/// How long `apply` waits for the device to appear after the attach.
pub const DEVICE_WAIT_SECS: u32 = 180;
/// The step's id.
pub const STEP_ID: &str = "disk-mount";

/// The device path of the data disk under `device_dir` ([`DEVICE_DIR`] on a VM).
pub fn device_path(device_dir: &str) -> String {
    format!(
        "{}/google-{DATA_DEVICE_NAME}",
        device_dir.trim_end_matches('/')
    )
}

/// gcsfuse's file cache directory under the data root `host_dir`.
pub fn gcsfuse_cache_dir(host_dir: &str) -> String {
    format!("{host_dir}/gcsfuse-cache")
}

/// Shell functions of the disk-mount script: the probe, the state `check` reports, the
/// wait for the device, the copy of an earlier data root.
const DISK_HELPERS: &str = r#"# disk_probe DEVICE: the type of the file system on DEVICE; `none` when blkid finds no
# signature at all; `pt TYPE` for a partition table without a file system. Fails when blkid
# cannot tell (an ambivalent probe, an I/O error): nothing is formatted on a doubt.
disk_probe() {
  if _dp_type=$(blkid -p -s TYPE -o value "$1" </dev/null); then
    if [ -n "$_dp_type" ]; then
      echo "$_dp_type"
      return 0
    fi
    _dp_pt=$(blkid -p -s PTTYPE -o value "$1" </dev/null || true)
    echo "pt ${_dp_pt:-unknown}"
    return 0
  else
    _dp_rc=$?
  fi
  if [ "$_dp_rc" = 2 ]; then
    echo none
    return 0
  fi
  echo "kgenv: blkid could not tell what $1 holds (exit $_dp_rc); kgenv formats a disk only when blkid finds nothing on it" >&2
  return 1
}

# fstab_line UUID TYPE: the data root's fstab entry.
fstab_line() {
  case "$2" in
    ext4|xfs|btrfs) _fl_opts=discard,defaults,nofail ;;
    *) _fl_opts=defaults,nofail ;;
  esac
  case "$2" in
    ext2|ext3|ext4) _fl_pass=2 ;;
    *) _fl_pass=0 ;;
  esac
  printf 'UUID=%s %s %s %s 0 %s\n' "$1" "$FSTAB_MP" "$2" "$_fl_opts" "$_fl_pass"
}

# The login user the working directory belongs to (the script runs through sudo).
login_user() {
  printf '%s\n' "${SUDO_USER:-$(id -un)}"
}

# Whether the data root has DEVICE's file system mounted (same device number).
mounted_here() {
  mountpoint -q "$DATA_ROOT" 2>/dev/null \
    && [ "$(mountpoint -d "$DATA_ROOT")" = "$(mountpoint -x "$DEVICE")" ]
}

# disk_state: one line, read-only: `ok TYPE UUID`, `no-device`, `unformatted`,
# `partitioned PTTYPE`, `probe-failed`, `unmounted TYPE UUID`, `no-fstab TYPE UUID`,
# `no-dirs TYPE UUID` or `other SOURCE FSTYPE` (another file system at the data root).
disk_state() {
  if [ ! -b "$DEVICE" ]; then
    echo no-device
    return 0
  fi
  if ! _ds_probe=$(disk_probe "$DEVICE"); then
    echo probe-failed
    return 0
  fi
  case "$_ds_probe" in
    none) echo unformatted; return 0 ;;
    "pt "*) echo "partitioned ${_ds_probe#pt }"; return 0 ;;
  esac
  _ds_uuid=$(blkid -p -s UUID -o value "$DEVICE" </dev/null || true)
  if ! mountpoint -q "$DATA_ROOT" 2>/dev/null; then
    echo "unmounted $_ds_probe $_ds_uuid"
    return 0
  fi
  if ! mounted_here; then
    echo "other $(findmnt -n -o SOURCE,FSTYPE --mountpoint "$DATA_ROOT" | head -n 1)"
    return 0
  fi
  if [ -z "$_ds_uuid" ] || ! grep -qxF "$(fstab_line "$_ds_uuid" "$_ds_probe")" "$FSTAB" 2>/dev/null; then
    echo "no-fstab $_ds_probe $_ds_uuid"
    return 0
  fi
  if [ ! -d "$INPUT_DIR" ] || [ ! -d "$WORKING_DIR" ] || [ ! -d "$CACHE_DIR" ] \
    || [ "$(stat -c %U "$WORKING_DIR")" != "$(login_user)" ]; then
    echo "no-dirs $_ds_probe $_ds_uuid"
    return 0
  fi
  echo "ok $_ds_probe $_ds_uuid"
}

# wait_for_device: waits up to WAIT_SECS for DEVICE, saying so every 10 s.
wait_for_device() {
  _wd_waited=0
  while [ ! -b "$DEVICE" ]; do
    if [ "$_wd_waited" -ge "$WAIT_SECS" ]; then
      if [ -e "$DEVICE" ]; then
        echo "kgenv: $DEVICE exists but is not a block device; kgenv mounts only the disk attached with device name $DEVICE_NAME" >&2
      else
        echo "kgenv: the data disk did not appear at $DEVICE within ${WAIT_SECS}s: is it attached to this VM with device name $DEVICE_NAME? (gcloud compute instances describe shows disks[].deviceName); run kgenv up again once it is" >&2
      fi
      return 1
    fi
    if [ $((_wd_waited % 10)) -eq 0 ]; then
      echo "waiting for the data disk at $DEVICE (${_wd_waited}s of ${WAIT_SECS}s)"
    fi
    sleep 1
    _wd_waited=$((_wd_waited + 1))
  done
}

# copy_old_root TYPE: when the data root holds files from before the data disk and the disk
# is new (only lost+found on it) or an earlier copy was interrupted (the marker is there),
# copies the data root onto the disk, mounted aside for that.
copy_old_root() {
  _co_stage=$(mktemp -d "${TMPDIR:-/tmp}/kgenv-data-disk.XXXXXX")
  if ! mount -t "$1" "$DEVICE" "$_co_stage"; then
    rmdir "$_co_stage"
    echo "kgenv: mounting the $1 file system of $DEVICE to copy $DATA_ROOT onto it failed" >&2
    return 1
  fi
  _co_other=
  for _co_f in "$_co_stage"/* "$_co_stage"/.[!.]* "$_co_stage"/..?*; do
    [ -e "$_co_f" ] || [ -L "$_co_f" ] || continue
    case "${_co_f##*/}" in
      lost+found|"$MARKER") ;;
      *) _co_other=1 ;;
    esac
  done
  _co_rc=0
  if [ -z "$_co_other" ] || [ -e "$_co_stage/$MARKER" ]; then
    echo "copying the files already in $DATA_ROOT onto the data disk"
    if : > "$_co_stage/$MARKER" && cp -ax "$DATA_ROOT/." "$_co_stage/" && sync; then
      rm -f "$_co_stage/$MARKER"
    else
      echo "kgenv: copying $DATA_ROOT onto the data disk failed (is the disk big enough for it? grow the data disk); nothing was removed, and the next run copies again" >&2
      _co_rc=1
    fi
  fi
  umount "$_co_stage" && rmdir "$_co_stage"
  return "$_co_rc"
}"#;

/// Everything the disk-mount host script is rendered from. A VM's values come from
/// [`DiskMountScript::for_env`]; tests point the device, the data root and the fstab into
/// a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskMountScript {
    /// The data disk's device path ([`device_path`] of [`DEVICE_DIR`] on a VM).
    pub device: String,
    /// Where it is mounted: the environment's data root.
    pub data_root: String,
    /// The fstab the entry goes to (`/etc/fstab` on a VM).
    pub fstab: String,
    /// The label a new file system gets.
    pub label: String,
    /// How long `apply` waits for the device.
    pub wait_secs: u32,
}

/// A marker kept on the disk while the data root from before the disk is copied onto it.
const COPY_MARKER: &str = ".kgenv-copying";

impl DiskMountScript {
    /// The script for `env`'s VM: the GCE device link, `env`'s data root, `/etc/fstab`.
    pub fn for_env(env: &Env) -> Self {
        Self {
            device: device_path(DEVICE_DIR),
            data_root: env.host_dir(),
            fstab: "/etc/fstab".into(),
            label: FS_LABEL.into(),
            wait_secs: DEVICE_WAIT_SECS,
        }
    }

    /// The directories made on the disk: `input`, `working` and gcsfuse's cache.
    pub fn dirs(&self) -> [String; 3] {
        [
            format!("{}/input", self.data_root),
            format!("{}/working", self.data_root),
            gcsfuse_cache_dir(&self.data_root),
        ]
    }

    /// Renders the script. `check` and `apply` print a state line last (`check`:
    /// [`DiskState`]'s words, exit 0 only for `ok`; `apply`: `mounted TYPE UUID`).
    pub fn render(&self) -> HostScript {
        let [input, working, cache] = self.dirs();
        ScriptBuilder::new(STEP_ID)
            .var("DEVICE", &self.device)
            .var("DEVICE_NAME", DATA_DEVICE_NAME)
            .var("DATA_ROOT", &self.data_root)
            .var("FSTAB_MP", fstab_escape(&self.data_root))
            .var("FSTAB", &self.fstab)
            .var("LABEL", &self.label)
            .var("WAIT_SECS", self.wait_secs.to_string())
            .var("INPUT_DIR", input)
            .var("WORKING_DIR", working)
            .var("CACHE_DIR", cache)
            .var("MARKER", COPY_MARKER)
            .helper(FSTAB_SET_FN)
            .helper(DISK_HELPERS)
            .check(
                r#"state=$(disk_state)
echo "$state"
[ "${state%% *}" = ok ]"#,
            )
            .apply(
                r#"wait_for_device
type=$(disk_probe "$DEVICE")
case "$type" in
  none)
    echo "no file system on $DEVICE: formatting it ext4 (label $LABEL)"
    mkfs.ext4 -q -L "$LABEL" -m 0 -E lazy_itable_init=0,lazy_journal_init=0,discard "$DEVICE" </dev/null
    type=ext4
    ;;
  "pt "*)
    echo "kgenv: $DEVICE holds a partition table (${type#pt }) and no file system; kgenv never formats a disk that holds something: attach an empty disk, or one with a file system on the whole disk" >&2
    exit 1
    ;;
  *)
    echo "$DEVICE holds a $type file system: mounting it as it is"
    ;;
esac
uuid=$(blkid -p -s UUID -o value "$DEVICE" </dev/null || true)
if [ -z "$uuid" ]; then
  echo "kgenv: the $type file system on $DEVICE has no UUID to mount it by" >&2
  exit 1
fi
mounted=0
if mountpoint -q "$DATA_ROOT" 2>/dev/null; then
  if ! mounted_here; then
    echo "kgenv: $DATA_ROOT already has another file system mounted ($(findmnt -n -o SOURCE,FSTYPE --mountpoint "$DATA_ROOT" | head -n 1)); unmount it, and run kgenv up again" >&2
    exit 1
  fi
  mounted=1
elif [ -n "$(ls -A "$DATA_ROOT" 2>/dev/null)" ]; then
  copy_old_root "$type"
fi
fstab_set "$FSTAB" "$FSTAB_MP" "" "$(fstab_line "$uuid" "$type")"
if [ "$mounted" = 0 ]; then
  mkdir -p "$DATA_ROOT"
  if ! mount -T "$FSTAB" "$DATA_ROOT"; then
    echo "kgenv: mounting the $type file system of $DEVICE (UUID $uuid) at $DATA_ROOT failed; it was not formatted, and $FSTAB has its entry (with nofail)" >&2
    exit 1
  fi
fi
mkdir -p "$INPUT_DIR" "$WORKING_DIR" "$CACHE_DIR"
chown "$(login_user):" "$WORKING_DIR"
chmod 0775 "$WORKING_DIR"
echo "mounted $type $uuid""#,
            )
            .build()
    }
}

/// What `check` found on the host, from the script's last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskState {
    /// Mounted at the data root with its fstab entry and directories.
    Ok {
        /// File system type.
        fs_type: String,
        /// File system UUID.
        uuid: String,
    },
    /// The device is not there (yet).
    NoDevice,
    /// The disk holds nothing: `apply` formats it.
    Unformatted,
    /// A partition table without a file system: `apply` refuses.
    Partitioned(String),
    /// blkid could not tell: `apply` refuses.
    ProbeFailed,
    /// A file system, not mounted at the data root.
    Unmounted {
        /// File system type.
        fs_type: String,
        /// File system UUID.
        uuid: String,
    },
    /// Mounted, but the fstab lacks its entry.
    NoFstab {
        /// File system type.
        fs_type: String,
        /// File system UUID.
        uuid: String,
    },
    /// Mounted with its entry, but a directory is missing.
    NoDirs {
        /// File system type.
        fs_type: String,
        /// File system UUID.
        uuid: String,
    },
    /// Another file system is mounted at the data root (source and type).
    Other(String),
}

impl DiskState {
    /// Parses the state line `check` prints; `None` for anything else (the script failed).
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let word = words.next()?;
        let mut fs = || {
            let fs_type = words.next()?.to_string();
            let uuid = words.next().unwrap_or_default().to_string();
            Some((fs_type, uuid))
        };
        Some(match word {
            "ok" => fs().map(|(fs_type, uuid)| Self::Ok { fs_type, uuid })?,
            "no-device" => Self::NoDevice,
            "unformatted" => Self::Unformatted,
            "partitioned" => Self::Partitioned(line["partitioned".len()..].trim().to_string()),
            "probe-failed" => Self::ProbeFailed,
            "unmounted" => fs().map(|(fs_type, uuid)| Self::Unmounted { fs_type, uuid })?,
            "no-fstab" => fs().map(|(fs_type, uuid)| Self::NoFstab { fs_type, uuid })?,
            "no-dirs" => fs().map(|(fs_type, uuid)| Self::NoDirs { fs_type, uuid })?,
            "other" => Self::Other(line["other".len()..].trim().to_string()),
            _ => return None,
        })
    }
}

/// Mounts the data disk at the environment's data root.
pub struct DiskMountStep {
    script: DiskMountScript,
    deps: Vec<String>,
}

impl DiskMountStep {
    /// The step for `env`'s VM, after the `host` step.
    pub fn new(env: &Env) -> Self {
        Self {
            script: DiskMountScript::for_env(env),
            deps: vec!["host".into()],
        }
    }

    /// Also runs after the step `id` (the `data-disk` step that attaches the disk).
    #[must_use]
    pub fn after(mut self, id: impl Into<String>) -> Self {
        self.deps.push(id.into());
        self
    }

    /// The host script.
    pub fn script(&self) -> &DiskMountScript {
        &self.script
    }

    fn apply_action(&self) -> String {
        format!(
            "host: sh -s -- apply  # {STEP_ID}: wait for {}, blkid, mkfs.ext4 only when it holds no file system, fstab UUID entry (nofail), mount at {}",
            self.script.device, self.script.data_root
        )
    }
}

#[async_trait]
impl Step for DiskMountStep {
    fn id(&self) -> &str {
        STEP_ID
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        format!(
            "data disk ({DATA_DEVICE_NAME}) mounted at {} (kept by `down`; formatted only when empty)",
            self.script.data_root
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![self.apply_action()]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let remote = ctx.require_remote().await?;
        let out = self
            .script
            .render()
            .run(ctx, remote.as_ref(), "check")
            .await?;
        let stdout = out.stdout_text();
        let line = stdout.lines().last().unwrap_or_default().trim();
        let root = &self.script.data_root;
        let device = &self.script.device;
        let apply = self.apply_action();
        let state = match DiskState::parse(line) {
            Some(s) => s,
            // A host that answers the check's exit status alone (the mock remote).
            None if out.success() => return Ok(CheckOutcome::satisfied()),
            None if out.exit_code == 1 => return Ok(CheckOutcome::missing(vec![apply])),
            None => {
                return Err(BackendError::CommandFailed {
                    command: format!("{STEP_ID} check"),
                    exit_code: out.exit_code,
                    stderr_tail: out.stderr_tail(),
                }
                .into())
            }
        };
        Ok(match state {
            DiskState::Ok { .. } => CheckOutcome::satisfied(),
            DiskState::NoDevice => CheckOutcome::missing(vec![apply]),
            DiskState::Unformatted => CheckOutcome::missing(vec![
                format!("host: mkfs.ext4 -L {FS_LABEL} {device}  # blkid finds no file system on it"),
                apply,
            ]),
            DiskState::Unmounted { fs_type, uuid } => CheckOutcome::missing(vec![format!(
                "host: mount the {fs_type} file system UUID={uuid} at {root} (kept as it is, not formatted)"
            ), apply]),
            DiskState::NoFstab { fs_type, uuid } => CheckOutcome::drifted(
                vec![format!("{root} is mounted but the fstab has no entry for UUID={uuid} ({fs_type})")],
                vec![apply],
            ),
            DiskState::NoDirs { .. } => CheckOutcome::drifted(
                vec![format!("input/, working/ or the gcsfuse cache directory is missing under {root}, or working/ is not the login user's")],
                vec![apply],
            ),
            DiskState::Partitioned(pt) => CheckOutcome::drifted(
                vec![format!("{device} holds a partition table ({pt}) and no file system: kgenv will not format it")],
                vec![apply],
            ),
            DiskState::ProbeFailed => CheckOutcome::drifted(
                vec![format!("blkid could not tell what {device} holds: kgenv will not format it")],
                vec![apply],
            ),
            DiskState::Other(what) => CheckOutcome::drifted(
                vec![format!("{root} has another file system mounted ({what})")],
                vec![apply],
            ),
        })
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let remote = ctx.require_remote().await?;
        let out = self
            .script
            .render()
            .run(ctx, remote.as_ref(), "apply")
            .await?;
        let stdout = out.stdout_text();
        let mounted = stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("mounted "))
            .map(|rest| {
                let mut w = rest.split_whitespace();
                (
                    w.next().unwrap_or_default().to_string(),
                    w.next().unwrap_or_default().to_string(),
                )
            });
        if let Some((fs_type, uuid)) = mounted {
            // Facts, not `created`: `down` has nothing to remove on the host, and the disk
            // keeps its file system.
            ctx.state
                .update(STEP_ID, |r| {
                    r.facts.insert("uuid".into(), uuid.clone());
                    r.facts.insert("fs_type".into(), fs_type.clone());
                    r.facts
                        .insert("mount_point".into(), self.script.data_root.clone());
                })
                .await?;
            ctx.log(format!(
                "data disk ({fs_type}, UUID {uuid}) mounted at {}",
                self.script.data_root
            ));
        }
        Ok(())
    }
    /// Nothing on the host: `down` deletes the VM with its boot disk (and with them the
    /// fstab entry and the mount), while the data disk and its file system are kept for the
    /// next `up`, which reattaches and mounts it without formatting. Unmounting here would
    /// only race the containers still using the data root.
    async fn destroy(&self, _ctx: &StepCtx) -> Result<Destroyed> {
        Ok(Destroyed::Nothing)
    }
}
