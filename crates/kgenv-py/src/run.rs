//! Runs: every long operation started from Python (`plan`, `up`, `down`, `status`, a
//! command over SSH, a data download, a Jupyter tunnel) is a future spawned on the shared
//! runtime that reports through one channel — its events, then its result. A [`Run`] is
//! the Python side of that channel:
//!
//! - `wait(on_event)` blocks with the GIL released, delivers events to `on_event` on the
//!   calling thread, and checks for signals every 50 ms. Ctrl-C (KeyboardInterrupt) or an
//!   exception from `on_event` cancels the run, waits for it to stop at a safe point (steps
//!   that were running finish, so the state file stays consistent), then raises. A second
//!   Ctrl-C stops waiting at once and leaves the run to finish in the background.
//! - `poll()` never blocks: the asyncio layer calls it from the event loop whenever the
//!   `notify` callback (given at start, called from the runtime's threads) says a message
//!   is ready.

use std::future::Future;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kgenv_core::runner::{Event, JupyterTunnel as Tunnel, Report, StatusReport};
use kgenv_core::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio_util::sync::CancellationToken;

use crate::tunnel::JupyterTunnel;
use crate::{convert, errors, runtime};

/// What a run produces.
pub(crate) enum Output {
    /// `plan`, `up`, `down`.
    Report(Report),
    /// `status` (boxed: the state it carries makes it the largest by far).
    Status(Box<StatusReport>),
    /// A command's exit code, stdout and stderr.
    Exec(i64, Vec<u8>, Vec<u8>),
    /// Lines of text (the container's logs).
    Lines(Vec<String>),
    /// Plain data (a GPU report, a data pull's report, ...).
    Value(serde_json::Value),
    /// An open Jupyter tunnel.
    Tunnel(Tunnel),
}

enum Msg {
    Event(Event),
    Done(Result<Output, Error>),
}

/// The sending side: events and the final result, each followed by a `notify()` call
/// when the caller is an event loop.
#[derive(Clone)]
pub(crate) struct Emitter {
    tx: Sender<Msg>,
    notify: Option<Arc<Py<PyAny>>>,
}

impl Emitter {
    fn poke(&self) {
        if let Some(n) = &self.notify {
            // Not during interpreter shutdown: nobody is waiting then.
            Python::try_attach(|py| {
                if let Err(e) = n.call0(py) {
                    e.write_unraisable(py, None);
                }
            });
        }
    }

    /// Sends one event.
    pub(crate) fn event(&self, e: Event) {
        if self.tx.send(Msg::Event(e)).is_ok() {
            self.poke();
        }
    }

    fn done(&self, r: Result<Output, Error>) {
        if self.tx.send(Msg::Done(r)).is_ok() {
            self.poke();
        }
    }
}

/// Spawns the future `make` builds on the shared runtime and returns its [`Run`].
/// The future gets the emitter for its events and the run's cancellation token.
pub(crate) fn spawn<F>(
    notify: Option<Py<PyAny>>,
    make: impl FnOnce(Emitter, CancellationToken) -> F,
) -> PyResult<Run>
where
    F: Future<Output = Result<Output, Error>> + Send + 'static,
{
    let rt = runtime::get()?;
    let (tx, rx) = channel();
    let cancel = CancellationToken::new();
    let emitter = Emitter {
        tx,
        notify: notify.map(Arc::new),
    };
    let fut = make(emitter.clone(), cancel.clone());
    rt.spawn(async move {
        let r = fut.await;
        emitter.done(r);
    });
    Ok(Run {
        rx: Mutex::new(rx),
        cancel,
    })
}

/// Runs `fut` until it ends or `cancel` fires (then it is dropped: for operations that
/// change nothing kgenv tracks, such as a command or a tunnel).
pub(crate) async fn cancellable<T>(
    cancel: CancellationToken,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        r = fut => r,
        () = cancel.cancelled() => Err(Error::Cancelled),
    }
}

/// A running operation. Returned by the `start_*` functions.
#[pyclass(module = "kgenv._kgenv", frozen)]
pub struct Run {
    rx: Mutex<Receiver<Msg>>,
    cancel: CancellationToken,
}

enum Recv {
    Msg(Msg),
    Timeout,
    Gone,
}

/// An event as a dictionary: its serde fields (`event` names the kind) and `text`, the
/// line the CLI prints.
pub(crate) fn event_to_py<'py>(py: Python<'py>, e: &Event) -> PyResult<Bound<'py, PyAny>> {
    let d = convert::ser_to_py(py, e)?;
    d.set_item("text", e.to_string())?;
    Ok(d)
}

fn output_to_py(py: Python<'_>, out: Output) -> PyResult<Py<PyAny>> {
    Ok(match out {
        Output::Report(r) => convert::ser_to_py(py, &r)?.unbind(),
        Output::Status(s) => convert::ser_to_py(py, &s)?.unbind(),
        Output::Exec(code, stdout, stderr) => {
            let d = PyDict::new(py);
            d.set_item("exit_code", code)?;
            d.set_item("stdout", PyBytes::new(py, &stdout))?;
            d.set_item("stderr", PyBytes::new(py, &stderr))?;
            d.into_any().unbind()
        }
        Output::Lines(l) => l.into_pyobject(py)?.into_any().unbind(),
        Output::Value(v) => convert::to_py(py, &v)?.unbind(),
        Output::Tunnel(t) => Py::new(py, JupyterTunnel::from(t))?.into_any(),
    })
}

fn gone() -> PyErr {
    PyRuntimeError::new_err("this kgenv run has already finished (its result was delivered)")
}

impl Run {
    fn rx(&self) -> MutexGuard<'_, Receiver<Msg>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recv(&self, timeout: Duration) -> Recv {
        match self.rx().recv_timeout(timeout) {
            Ok(m) => Recv::Msg(m),
            Err(RecvTimeoutError::Timeout) => Recv::Timeout,
            Err(RecvTimeoutError::Disconnected) => Recv::Gone,
        }
    }
}

#[pymethods]
impl Run {
    /// Blocks until the run ends and returns its result, calling `on_event(dict)` for each
    /// event on this thread. Ctrl-C cancels the run cleanly, then raises KeyboardInterrupt.
    #[pyo3(signature = (on_event=None))]
    fn wait(&self, py: Python<'_>, on_event: Option<Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        // The error to raise once the run has stopped (an interrupt, or on_event's error).
        let mut pending: Option<PyErr> = None;
        loop {
            match py.detach(|| self.recv(Duration::from_millis(50))) {
                Recv::Msg(Msg::Event(e)) => {
                    if let (None, Some(cb)) = (&pending, &on_event) {
                        if let Err(err) = event_to_py(py, &e).and_then(|d| cb.call1((d,))) {
                            self.cancel.cancel();
                            pending = Some(err);
                        }
                    }
                }
                Recv::Msg(Msg::Done(r)) => {
                    if let Some(err) = pending {
                        return Err(err);
                    }
                    return match r {
                        Ok(out) => output_to_py(py, out),
                        Err(e) => Err(errors::to_py(py, &e)),
                    };
                }
                Recv::Timeout => {
                    if let Err(err) = py.check_signals() {
                        self.cancel.cancel();
                        if pending.is_some() {
                            // A second interrupt: stop waiting; the run stops on its own.
                            return Err(err);
                        }
                        pending = Some(err);
                    }
                }
                Recv::Gone => {
                    return Err(pending.unwrap_or_else(|| {
                        PyRuntimeError::new_err("the kgenv run stopped without a result (a bug: please report it); steps record what they create as they go, so `status` shows what exists")
                    }));
                }
            }
        }
    }

    /// The next message without blocking: `("event", dict)`, `("ok", result)`,
    /// `("error", exception)`, or None when nothing is ready.
    fn poll<'py>(&self, py: Python<'py>) -> PyResult<Option<(&'static str, Py<PyAny>)>> {
        let msg = self.rx().try_recv();
        Ok(match msg {
            Ok(Msg::Event(e)) => Some(("event", event_to_py(py, &e)?.unbind())),
            Ok(Msg::Done(Ok(out))) => Some(("ok", output_to_py(py, out)?)),
            Ok(Msg::Done(Err(e))) => {
                Some(("error", errors::to_py(py, &e).into_value(py).into_any()))
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(("error", gone().into_value(py).into_any())),
        })
    }

    /// Asks the run to stop at the next safe point (running steps finish first).
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Whether `cancel()` was called (or Ctrl-C pressed while waiting).
    #[getter]
    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
