//! OCI bundles for the tests: a temp dir with a `config.json` from `<runtime> spec`,
//! edited as JSON, whose root is the shared fixture rootfs (read-only) or a private copy.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::command::Cmd;
use crate::env::{unique, Fixtures};
use crate::host::cgroup_dir;
use crate::runtime::Runtime;
use crate::user::TestUser;

/// A bundle directory. Every edit rewrites `config.json` at once, so the
/// bundle on disk always matches [`Bundle::config`].
///
/// The defaults differ from a bare `spec` in three ways: `process.terminal`
/// is false (the tests read stdout), `root.path` is the absolute path of the
/// shared fixture rootfs (the spec keeps `root.readonly: true`), and
/// `linux.cgroupsPath` is a unique `/kt-cg-<pid>-<n>` so that the test can find
/// the container's cgroup on the host and the runtime handle can clean it up.
#[derive(Debug)]
pub struct Bundle {
    dir: TempDir,
    config: Value,
    rootfs: PathBuf,
    private_rootfs: bool,
    cgroups_path: String,
}

impl Bundle {
    /// A bundle whose config comes from `rt`'s `spec` command.
    #[track_caller]
    pub fn new(rt: &Runtime) -> Bundle {
        let fixtures = Fixtures::get();
        let dir = tempfile::Builder::new()
            .prefix("kapsel-it-bundle-")
            .tempdir()
            .expect("create a bundle directory");
        // 0755: a container in a user namespace must be able to walk into it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod bundle");
        rt.command(&["spec"]).current_dir(dir.path()).ok();
        let text = fs::read_to_string(dir.path().join("config.json"))
            .expect("`spec` did not write config.json");
        let mut config: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`spec` wrote invalid JSON ({e}):\n{text}"));
        let rootfs = fixtures.rootfs();
        let cgroups_path = format!("/{}", unique("kt-cg"));
        rt.track_cgroup(&cgroups_path);
        config["process"]["terminal"] = json!(false);
        config["root"]["path"] = json!(rootfs.to_str().expect("utf-8 rootfs path"));
        config["linux"]["cgroupsPath"] = json!(cgroups_path);
        let bundle = Bundle {
            dir,
            config,
            rootfs,
            private_rootfs: false,
            cgroups_path,
        };
        bundle.save();
        bundle
    }

    /// A rootless bundle for `user`: `config.json` from `rt`'s `spec --rootless` run as the
    /// user (so its uid and gid are the ones mapped to root), a private copy of the rootfs,
    /// everything owned by the user. No `linux.cgroupsPath` is set: runc refuses an explicit
    /// one that a rootless user cannot create, and picks no cgroup without one.
    /// `rt` should come from [`Runtime::as_user`] with the same user.
    #[track_caller]
    pub fn rootless(rt: &Runtime, user: &TestUser) -> Bundle {
        let fixtures = Fixtures::get();
        let dir = tempfile::Builder::new()
            .prefix("kapsel-it-rl-bundle-")
            .tempdir()
            .expect("create a bundle directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod bundle");
        let rootfs = dir.path().join("rootfs");
        Cmd::new("cp")
            .arg("-a")
            .arg(fixtures.rootfs())
            .arg(&rootfs)
            .ok();
        user.chown(dir.path());
        rt.command(&["spec", "--rootless"])
            .current_dir(dir.path())
            .ok();
        let text = fs::read_to_string(dir.path().join("config.json"))
            .expect("`spec --rootless` did not write config.json");
        let mut config: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`spec --rootless` wrote invalid JSON ({e}):\n{text}"));
        config["process"]["terminal"] = json!(false);
        config["root"]["path"] = json!(rootfs.to_str().expect("utf-8 rootfs path"));
        let bundle = Bundle {
            dir,
            config,
            rootfs,
            private_rootfs: true,
            cgroups_path: String::new(),
        };
        bundle.save();
        bundle
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bundle path as a &str, for command lines.
    pub fn dir_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 bundle path")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The container's root filesystem on the host.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// `linux.cgroupsPath` ("" for a [`Bundle::rootless`] one, which sets none).
    pub fn cgroups_path(&self) -> &str {
        &self.cgroups_path
    }

    /// `/sys/fs/cgroup/<controller>/<cgroupsPath>` on the host.
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        cgroup_dir(controller, &self.cgroups_path)
    }

    fn save(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialize config");
        fs::write(self.config_path(), text).expect("write config.json");
    }

    /// Edit the config as JSON; saved afterwards.
    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) -> &mut Self {
        f(&mut self.config);
        self.save();
        self
    }

    /// Set the value at a JSON pointer (`/process/user/uid`), creating objects on the way.
    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        let mut at = &mut self.config;
        for token in pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            at = match at {
                Value::Array(items) => {
                    let i: usize = token
                        .parse()
                        .unwrap_or_else(|_| panic!("{pointer}: {token} is not an array index"));
                    &mut items[i]
                }
                other => {
                    if !other.is_object() {
                        *other = json!({});
                    }
                    other
                        .as_object_mut()
                        .expect("object")
                        .entry(token)
                        .or_insert(Value::Null)
                }
            };
        }
        *at = value;
        self.save();
        self
    }

    /// `process.args`.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    /// `process.args = ["sh", "-c", script]`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Append `KEY=VALUE` to `process.env`.
    pub fn env(&mut self, kv: &str) -> &mut Self {
        self.edit(|c| {
            let env = &mut c["process"]["env"];
            if !env.is_array() {
                *env = json!([]);
            }
            env.as_array_mut().expect("array").push(json!(kv));
        })
    }

    pub fn hostname(&mut self, name: &str) -> &mut Self {
        self.set("/hostname", json!(name))
    }

    /// Append a mount. With the shared (read-only) rootfs the destination must
    /// already exist in it (or lie under /dev, /proc or /sys, which are mounted
    /// filesystems): a runtime would otherwise create it in the shared fixture.
    #[track_caller]
    pub fn mount(&mut self, mount: Value) -> &mut Self {
        let dest = mount["destination"]
            .as_str()
            .expect("mount needs a destination")
            .to_string();
        if !self.private_rootfs {
            let on_fs = ["/dev/", "/proc/", "/sys/"]
                .iter()
                .any(|p| dest.starts_with(p));
            assert!(
                on_fs || self.rootfs.join(dest.trim_start_matches('/')).exists(),
                "mount destination {dest} does not exist in the shared rootfs: call private_rootfs() \
                 first, or mount on an existing directory (/tmp, /var, /root, /usr/bin...)"
            );
        }
        self.edit(|c| {
            c["mounts"]
                .as_array_mut()
                .expect("mounts array")
                .push(mount)
        })
    }

    /// Bind-mount a host path at `dest` (`options` added to `rbind`).
    #[track_caller]
    pub fn bind(&mut self, host: &Path, dest: &str, options: &[&str]) -> &mut Self {
        let mut opts = vec!["rbind"];
        opts.extend_from_slice(options);
        self.mount(json!({
            "destination": dest,
            "type": "bind",
            "source": host.to_str().expect("utf-8 host path"),
            "options": opts,
        }))
    }

    /// A directory of the bundle, outside the rootfs, writable by anyone: bind it
    /// into the container to get files out.
    pub fn host_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).expect("create host dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).expect("chmod host dir");
        p
    }

    /// Drop a namespace type from `linux.namespaces` (share the host's).
    pub fn remove_namespace(&mut self, ty: &str) -> &mut Self {
        self.edit(|c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .expect("namespaces array")
                .retain(|n| n["type"] != ty)
        })
    }

    /// Add or replace a namespace entry (`path` None: a new namespace).
    pub fn namespace(&mut self, ty: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(ty);
        let entry = match path {
            Some(p) => json!({"type": ty, "path": p}),
            None => json!({"type": ty}),
        };
        self.edit(|c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .expect("namespaces array")
                .push(entry)
        })
    }

    /// Append a hook to `hooks.<kind>`.
    pub fn hook(&mut self, kind: &str, hook: Value) -> &mut Self {
        self.edit(|c| {
            let hooks = &mut c["hooks"][kind];
            if !hooks.is_array() {
                *hooks = json!([]);
            }
            hooks.as_array_mut().expect("array").push(hook);
        })
    }

    /// Switch to a private copy of the rootfs (`cp -a`) at `<bundle>/rootfs`,
    /// for tests that change files in it. Still read-only unless [`Bundle::writable_root`].
    #[track_caller]
    pub fn private_rootfs(&mut self) -> &mut Self {
        if self.private_rootfs {
            return self;
        }
        let copy = self.dir.path().join("rootfs");
        Cmd::new("cp").arg("-a").arg(&self.rootfs).arg(&copy).ok();
        self.rootfs = copy;
        self.private_rootfs = true;
        let path = self.rootfs.to_str().expect("utf-8 path").to_string();
        self.set("/root/path", json!(path))
    }

    /// `root.readonly = false`; only with a private rootfs, never on the shared fixture.
    #[track_caller]
    pub fn writable_root(&mut self) -> &mut Self {
        assert!(
            self.private_rootfs,
            "writable_root() needs private_rootfs() first: the shared fixture must stay untouched"
        );
        self.set("/root/readonly", json!(false))
    }
}
