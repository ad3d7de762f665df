//! Shared by the root tests (e2e, e2e_hubble, flood): skipping without privileges (but
//! failing under CI=true) and taking a test lab down whatever happens.

use std::process::Child;

use agent::lab::spec::LabSpec;
use agent::lab::topology;

/// Skips `test` with a message, or fails it when CI=true: CI runs as root and must run it.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run with CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

/// Stops the agent (if any) and takes the lab down even when an assertion fails.
pub struct LabGuard {
    pub spec: LabSpec,
    pub agent: Option<Child>,
}

impl LabGuard {
    pub fn new(spec: &LabSpec) -> Self {
        LabGuard {
            spec: spec.clone(),
            agent: None,
        }
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = topology::down(&self.spec);
    }
}
