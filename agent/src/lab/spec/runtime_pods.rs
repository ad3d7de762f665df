//! Pods added to a running lab (`lab add-pod`): the runtime pods file (read, written
//! atomically) and the spec with those pods merged in, validated like the spec's own.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::load::{Ctx, PodChecker, PodDef, parse_error};
use super::{LabSpec, SpecError};

/// The runtime pods file: the `[[pods]]` entries `lab add-pod` added to a running lab.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPodsFile {
    #[serde(default)]
    pods: Vec<PodDef>,
}

/// Reads a runtime pods file (`[[pods]]` entries, the spec's pod schema); a missing file
/// has no pods. Parse errors name the file and line.
pub fn read_pods_file(path: impl AsRef<Path>) -> Result<Vec<PodDef>, SpecError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SpecError::Read { origin, source }),
    };
    let raw: RawPodsFile = toml::from_str(&text).map_err(|e| parse_error(&origin, &text, &e))?;
    Ok(raw.pods)
}

/// A TOML basic string: `"..."` with `"`, `\` and control characters escaped.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text of a runtime pods file: one `[[pods]]` table per pod, fields in the spec's
/// order, absent options left out.
pub fn pods_file_text(pods: &[PodDef]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "# Pods added to a running lab with `hubble-agent lab add-pod` (removed by\n\
         # `lab remove-pod` and `lab down`). Same schema as the spec's [[pods]].\n",
    );
    for p in pods {
        let _ = writeln!(s, "\n[[pods]]");
        if let Some(n) = &p.node {
            let _ = writeln!(s, "node = {}", toml_str(n));
        }
        let _ = writeln!(s, "namespace = {}", toml_str(&p.namespace));
        let _ = writeln!(s, "name = {}", toml_str(&p.name));
        let labels: Vec<String> = p
            .labels
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(s, "labels = {{}}");
        } else {
            let _ = writeln!(s, "labels = {{ {} }}", labels.join(", "));
        }
        let _ = writeln!(s, "ipv4 = {}", toml_str(&p.ipv4));
        let _ = writeln!(s, "ipv6 = {}", toml_str(&p.ipv6));
        if let Some(w) = &p.workload {
            let _ = writeln!(
                s,
                "workload = {{ kind = {}, name = {} }}",
                toml_str(&w.kind),
                toml_str(&w.name)
            );
        }
        if !p.l7.is_empty() {
            let rules: Vec<String> = p.l7.iter().map(|r| toml_str(r)).collect();
            let _ = writeln!(s, "l7 = [{}]", rules.join(", "));
        }
    }
    s
}

/// Writes a runtime pods file atomically: a temporary file (mode 0600) in the same
/// directory, fsync, rename over `path`, fsync of the directory. A reader polling the file
/// sees the old or the new list, never half of one. No pods removes the file.
pub fn write_pods_file(path: impl AsRef<Path>, pods: &[PodDef]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if pods.is_empty() {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    } else {
        let file_name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other(format!("{}: not a file path", path.display())))?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(pods_file_text(pods).as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    // Make the rename (or removal) itself durable.
    std::fs::File::open(&dir)?.sync_all()
}

impl LabSpec {
    /// The runtime pods file of this lab: `/run/hubble-lab/<lab>.pods.toml`, next to the
    /// `<lab>.netns` state file. `lab add-pod` writes it, `lab remove-pod` and `lab down`
    /// shrink or remove it.
    pub fn live_pods_path(&self) -> PathBuf {
        Path::new(super::super::topology::STATE_DIR).join(format!("{}.pods.toml", self.lab.name))
    }

    /// The spec file plus the pods added at runtime ([`LabSpec::live_pods_path`]), validated
    /// together: the runtime pods follow the spec's (their `index` continues after them,
    /// `added` is true) and must not repeat a name or address. A missing runtime file gives
    /// just the spec. Errors in the runtime file name that file.
    pub fn load_live(path: impl AsRef<Path>) -> Result<LabSpec, SpecError> {
        Self::load(path)?.with_live_pods()
    }

    /// [`LabSpec::load_live`] with the runtime pods read from `pods_path`.
    pub fn load_with_pods(
        path: impl AsRef<Path>,
        pods_path: impl AsRef<Path>,
    ) -> Result<LabSpec, SpecError> {
        Self::load(path)?.with_pods_file(pods_path)
    }

    /// This spec's own pods plus the lab's current runtime pods (any runtime pods this
    /// value already carries are replaced).
    pub fn with_live_pods(&self) -> Result<LabSpec, SpecError> {
        self.with_pods_file(self.live_pods_path())
    }

    /// This spec's own pods plus the pods of a runtime pods file (missing = none).
    pub fn with_pods_file(&self, pods_path: impl AsRef<Path>) -> Result<LabSpec, SpecError> {
        let pods_path = pods_path.as_ref();
        let defs = read_pods_file(pods_path)?;
        self.with_pods(&defs, &pods_path.display().to_string())
    }

    /// This spec's own pods plus `defs` (added pods), validated like the spec's `[[pods]]`;
    /// errors name `origin` and `pods[i]`, `i` counting in `defs`.
    pub fn with_pods(&self, defs: &[PodDef], origin: &str) -> Result<LabSpec, SpecError> {
        let mut out = self.spec_only();
        let c = Ctx { origin };
        let mut checker = PodChecker::new(&out.lab, &out.nodes);
        for p in &out.pods {
            checker.seed(p);
        }
        let first = out.pods.len();
        let mut added = Vec::with_capacity(defs.len());
        for (j, d) in defs.iter().enumerate() {
            added.push(checker.check(&c, &format!("pods[{j}]"), first + j, d, true)?);
        }
        checker.check_reserved(&c)?;
        out.pods.extend(added);
        Ok(out)
    }

    /// The spec file's part of this spec: without the pods added at runtime.
    pub fn spec_only(&self) -> LabSpec {
        let mut s = self.clone();
        s.pods.retain(|p| !p.added);
        s
    }

    /// How many pods come from the spec file (they are `pods[..spec_pod_count()]`).
    pub fn spec_pod_count(&self) -> usize {
        self.pods.iter().filter(|p| !p.added).count()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{MINI, temp_file};
    use super::super::{Labels, Peer};
    use super::*;

    const RUNTIME: &str = r#"
[[pods]]
namespace = "default"
name = "c"
labels = { app = "b" }
ipv4 = "10.9.0.12"
ipv6 = "fd00:9::12"
workload = { kind = "Deployment", name = "c" }
l7 = ["http/8080"]

[[pods]]
namespace = "other"
name = "d"
ipv4 = "10.9.0.13"
ipv6 = "fd00:9::13"
"#;

    #[test]
    fn load_live_merges_runtime_pods() {
        let (_d, spec_path) = temp_file("t.toml", MINI);
        let pods_path = spec_path.with_file_name("t1.pods.toml");
        // Missing runtime file: just the spec.
        let s = LabSpec::load_with_pods(&spec_path, &pods_path).unwrap();
        assert_eq!(s.pods.len(), 2);
        assert_eq!(s.spec_pod_count(), 2);
        assert!(s.pods.iter().all(|p| !p.added));

        std::fs::write(&pods_path, RUNTIME).unwrap();
        let s = LabSpec::load_with_pods(&spec_path, &pods_path).unwrap();
        assert_eq!(s.pods.len(), 4);
        assert_eq!(s.spec_pod_count(), 2);
        let idx: Vec<_> = s.pods.iter().map(|p| (p.index, p.added)).collect();
        assert_eq!(idx, [(0, false), (1, false), (2, true), (3, true)]);
        let c = s.pod("default", "c").unwrap();
        assert_eq!(c.netns, "hl-t1-default-c");
        assert_eq!(c.l7.len(), 1);
        assert_eq!(c.workload.as_ref().unwrap().kind, "Deployment");
        assert_eq!(s.peer_of("10.9.0.13".parse().unwrap()), Peer::Pod(3));
        // Runtime pods are selected like spec pods.
        let sel = Labels::from([("app".to_string(), "b".to_string())]);
        assert_eq!(s.pods_selected_by(&sel).len(), 2);
        // The spec file alone is unchanged, and merging again replaces the runtime pods.
        assert_eq!(LabSpec::load(&spec_path).unwrap().pods.len(), 2);
        assert_eq!(s.spec_only().pods.len(), 2);
        assert_eq!(s.with_pods_file(&pods_path).unwrap().pods.len(), 4);
        assert_eq!(s.all_netns().len(), 6);
        assert_eq!(
            LabSpec::parse(MINI, "t.toml").unwrap().live_pods_path(),
            PathBuf::from("/run/hubble-lab/t1.pods.toml")
        );
    }

    #[test]
    fn load_live_rejects_clashes_naming_the_runtime_file() {
        let (_d, spec_path) = temp_file("t.toml", MINI);
        let pods_path = spec_path.with_file_name("t1.pods.toml");
        let origin = pods_path.display().to_string();
        let err = |text: &str| {
            std::fs::write(&pods_path, text).unwrap();
            LabSpec::load_with_pods(&spec_path, &pods_path)
                .unwrap_err()
                .to_string()
        };
        // Same name as a spec pod.
        assert_eq!(
            err(&RUNTIME.replacen("name = \"c\"", "name = \"a\"", 1)),
            format!("{origin}: pods[0].name: pod default/a is defined twice")
        );
        // Same name twice in the runtime file.
        assert_eq!(
            err(&RUNTIME
                .replacen("name = \"d\"", "name = \"c\"", 1)
                .replacen("namespace = \"other\"", "namespace = \"default\"", 1)),
            format!("{origin}: pods[1].name: pod default/c is defined twice")
        );
        // A spec pod's address, the node's address.
        assert_eq!(
            err(&RUNTIME.replacen("10.9.0.13", "10.9.0.11", 1)),
            format!(
                "{origin}: pods[1].ipv4: 10.9.0.11 is already used (by another pod or the node)"
            )
        );
        assert_eq!(
            err(&RUNTIME.replacen("fd00:9::12", "fd00:9::1", 1)),
            format!(
                "{origin}: pods[0].ipv6: fd00:9::1 is already used (by another pod or the node)"
            )
        );
        assert_eq!(
            err(&RUNTIME.replacen("10.9.0.12", "10.9.1.12", 1)),
            format!(
                "{origin}: pods[0].ipv4: 10.9.1.12 is not a host address inside lab.ipv4_cidr 10.9.0.0/24"
            )
        );
        // Parse errors name the runtime file and its line; unknown fields are rejected.
        let e = err(&RUNTIME.replacen("labels", "lables", 1));
        assert!(
            e.starts_with(&format!("{origin}: line 5: unknown field `lables`")),
            "{e}"
        );
        let e = err("[lab]\nname = \"x\"\n");
        assert!(e.starts_with(&format!("{origin}: line 1: ")), "{e}");
    }

    #[test]
    fn pods_file_round_trip_and_atomic_write() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t1.pods.toml");
        let mut defs = read_pods_file(&path).unwrap();
        assert!(defs.is_empty(), "a missing file has no pods");
        let (_d, spec_path) = temp_file("t.toml", MINI);
        let runtime = dir.path().join("runtime.toml");
        std::fs::write(&runtime, RUNTIME).unwrap();
        defs.extend(read_pods_file(&runtime).unwrap());
        defs[1].labels.insert("we\"ird".into(), "x".into());
        defs[1].node = Some("n1".into());
        write_pods_file(&path, &defs).unwrap();
        assert_eq!(read_pods_file(&path).unwrap(), defs);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Only the file itself is left (no temporary).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // What we write loads back as runtime pods (with a valid label key).
        defs[1].labels.clear();
        write_pods_file(&path, &defs).unwrap();
        let s = LabSpec::load_with_pods(&spec_path, &path).unwrap();
        assert_eq!(s.pods.len(), 4);
        assert_eq!(s.pods[3].node, "n1");
        // No pods: no file.
        write_pods_file(&path, &[]).unwrap();
        assert!(!path.exists());
        write_pods_file(&path, &[]).unwrap();
    }
}
