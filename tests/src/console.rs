//! Reading a Tessera console: how each VM ended, and whether the hypervisor
//! panicked or refused to boot. The line formats are the hypervisor's
//! (`hypervisor/src/lifecycle.rs`, `hypervisor/src/console/`); the tests below pin them.

/// How one VM ended, as the hypervisor reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEnd {
    Exited(u32),
    /// With the reason from the stop line.
    Stopped(String),
}

#[derive(Debug, Default)]
pub struct Report {
    /// In the order they ended.
    pub ends: Vec<(String, VmEnd)>,
    pub panic: Option<String>,
    pub boot_error: Option<String>,
}

impl Report {
    pub fn parse(lines: &[String]) -> Report {
        let mut r = Report::default();
        let mut reasons: Vec<(String, String)> = Vec::new();
        let mut last_error: Option<String> = None;
        for l in lines {
            let l = l.trim_end();
            if let Some(rest) = l.strip_prefix("tessera: PANIC") {
                r.panic.get_or_insert_with(|| rest.trim_start_matches([' ', ':']).to_string());
            } else if let Some(rest) = l.strip_prefix("tessera: error: vm \"") {
                // tessera: error: vm "NAME" vCPU N stopped: REASON
                if let Some((name, tail)) = rest.split_once('"') {
                    if let Some((_, reason)) = tail.split_once("stopped: ") {
                        reasons.push((name.to_string(), reason.to_string()));
                    }
                }
            } else if l == "tessera: error: boot aborted" {
                r.boot_error = Some(last_error.clone().unwrap_or_else(|| "boot aborted".into()));
            } else if let Some(e) = l.strip_prefix("tessera: error: ") {
                last_error = Some(e.to_string());
            } else if let Some(rest) = l.strip_prefix("tessera: vm \"") {
                // tessera: vm "NAME" (id N): exited, status S | stopped by the hypervisor
                let Some((name, tail)) = rest.split_once('"') else { continue };
                if let Some((_, st)) = tail.split_once("): exited, status ") {
                    if let Ok(st) = st.trim().parse() {
                        r.ends.push((name.to_string(), VmEnd::Exited(st)));
                    }
                } else if tail.ends_with("): stopped by the hypervisor") {
                    let reason = reasons.iter().rev().find(|(n, _)| n == name).map(|(_, w)| w.clone());
                    r.ends.push((name.to_string(), VmEnd::Stopped(reason.unwrap_or_default())));
                }
            }
        }
        r
    }

    pub fn end_of(&self, vm: &str) -> Option<VmEnd> {
        self.ends.iter().find(|(n, _)| n == vm).map(|(_, e)| e.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Report {
        Report::parse(&text.lines().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn exits_and_stops() {
        let r = parse(
            "tessera: vm \"a\" (id 1): 1 vCPU(s), 16 MiB RAM\n\
             a: tessera: vm \"a\" (id 1): exited, status 0\n\
             tessera: error: vm \"b\" vCPU 1 stopped: write to IPA 0x40200000 (no stage-2 mapping); PC 0x1\n\
             tessera: vm \"b\" (id 2): stopped by the hypervisor\n\
             tessera: vm \"a\" (id 1): exited, status 7",
        );
        assert_eq!(r.end_of("a"), Some(VmEnd::Exited(7)), "a guest cannot forge the hypervisor's line");
        assert!(matches!(r.end_of("b"), Some(VmEnd::Stopped(w)) if w.starts_with("write to IPA 0x40200000")));
        assert_eq!(r.end_of("c"), None);
        assert!(r.panic.is_none() && r.boot_error.is_none());
    }

    #[test]
    fn panics_and_refused_boots() {
        let r = parse("tessera: PANIC on pCPU 1: panicked at src/x.rs:3:5:\nboom");
        assert_eq!(r.panic.as_deref(), Some("on pCPU 1: panicked at src/x.rs:3:5:"));
        let r = parse("tessera: error: refusing the boot payload at 0x41000000: payload checksum mismatch\ntessera: error: boot aborted");
        assert_eq!(r.boot_error.as_deref(), Some("refusing the boot payload at 0x41000000: payload checksum mismatch"));
    }
}
