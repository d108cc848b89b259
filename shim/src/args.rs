//! The command line containerd gives a shim: Go `flag` style single-dash options, then an
//! optional action (`start` or `delete`). Without an action the binary is the long-running shim.

use std::path::PathBuf;

/// What containerd asked this invocation to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Spawn the long-running shim, print its address and exit.
    Start,
    /// Clean up after a shim that is gone: runtime delete, unmount, print a DeleteResponse.
    Delete,
    /// Serve the task API (the long-running shim itself).
    Serve,
}

/// Parsed shim options.
#[derive(Debug, Clone)]
pub struct Args {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC address (`-address`).
    pub address: String,
    pub publish_binary: Option<PathBuf>,
    pub bundle: Option<PathBuf>,
    /// The socket the daemon serves on (handed down by `start`).
    pub socket: Option<PathBuf>,
    pub debug: bool,
    pub action: Action,
}

/// A command line containerd would never send.
#[derive(Debug, PartialEq, Eq)]
pub struct ArgsError(pub String);

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgsError {}

impl Args {
    /// Parse the arguments after the program name.
    pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Args, ArgsError> {
        let mut a = Args {
            namespace: String::new(),
            id: String::new(),
            address: String::new(),
            publish_binary: None,
            bundle: None,
            socket: None,
            debug: false,
            action: Action::Serve,
        };
        let mut it = argv.into_iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with('-') {
                a.action = match arg.as_str() {
                    "start" => Action::Start,
                    "delete" => Action::Delete,
                    other => return Err(ArgsError(format!("unknown action {other:?}"))),
                };
                continue;
            }
            let flag = arg.trim_start_matches('-');
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if name == "debug" || name == "v" {
                a.debug = inline.as_deref() != Some("false");
                if name == "v" {
                    println!("containerd-shim-kapsel-v2 {}", env!("CARGO_PKG_VERSION"));
                    std::process::exit(0);
                }
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| ArgsError(format!("flag -{name} needs a value")))?,
            };
            match name {
                "namespace" => a.namespace = value,
                "id" => a.id = value,
                "address" => a.address = value,
                "publish-binary" => a.publish_binary = Some(value.into()),
                "bundle" => a.bundle = Some(value.into()),
                "socket" => a.socket = Some(value.into()),
                // Accepted for compatibility, not used.
                "runtime-root" | "criu" | "systemd-cgroup" => {}
                other => return Err(ArgsError(format!("unknown flag -{other}"))),
            }
        }
        if a.namespace.is_empty() {
            return Err(ArgsError("-namespace is required".into()));
        }
        if a.id.is_empty() && a.action != Action::Serve {
            return Err(ArgsError("-id is required".into()));
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_containerd_start_line() {
        let a = Args::parse(v(
            "-namespace default -address /c.sock -publish-binary /usr/bin/containerd -id k5 start",
        ))
        .unwrap();
        assert_eq!(a.action, Action::Start);
        assert_eq!(a.namespace, "default");
        assert_eq!(a.id, "k5");
        assert_eq!(a.address, "/c.sock");
        assert_eq!(a.publish_binary, Some(PathBuf::from("/usr/bin/containerd")));
    }

    #[test]
    fn parses_delete_and_serve() {
        let a = Args::parse(v("-namespace n -address /a -id x -bundle /b delete")).unwrap();
        assert_eq!(a.action, Action::Delete);
        assert_eq!(a.bundle, Some(PathBuf::from("/b")));
        let a = Args::parse(v("-namespace n -id x -address=/a -debug")).unwrap();
        assert_eq!(a.action, Action::Serve);
        assert!(a.debug);
    }

    #[test]
    fn rejects_unknown_action() {
        assert!(Args::parse(v("-namespace n -id x frob")).is_err());
    }
}
