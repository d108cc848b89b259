//! kapseld and the kapsel CLI against HTTPS registries: Debian's `docker-registry` serving TLS
//! with a CA, a server certificate for 127.0.0.1 and a client certificate made here by the
//! `openssl` command, trusted through a certs.d directory given to kapseld with `--certs-dir`
//! (ports 5471-5472). skopeo, trusting the same directory, is the other client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kapsel_integration_tests::kapseld::{fixture_env, sha256_file, Daemon, Registry, ServerCert};
use kapsel_integration_tests::{require_program, unique, Cmd, CmdOutput, Fixtures};

/// What `kapsel push` says the pushed manifest's digest is.
fn pushed_digest(out: &CmdOutput) -> String {
    out.stdout
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in the push output: {out}"))
        .to_string()
}

/// `skopeo copy` of `image` from the TLS registry into a `dir:` copy (manifest kept byte for
/// byte), trusting the CA (and presenting the client certificate) in `cert_dir`; returns the
/// copied manifest's digest.
fn skopeo_pull_digest(image: &str, cert_dir: &Path, creds: Option<&str>, out: &Path) -> String {
    require_program("skopeo", "skopeo");
    let mut c = Cmd::new("skopeo")
        .args(["--insecure-policy", "copy", "--src-cert-dir"])
        .arg(cert_dir);
    if let Some(cr) = creds {
        c = c.args(["--src-creds", cr]);
    }
    c.arg(format!("docker://{image}"))
        .arg(format!("dir:{}", out.display()))
        .timeout(Duration::from_secs(120))
        .ok();
    sha256_file(&out.join("manifest.json"))
}

#[test]
fn https_registry_trusted_through_certs_dir_with_refusals_explained() {
    require_program("skopeo", "skopeo");
    let tmp = PathBuf::from(format!("/tmp/{}", unique("kcore-tls")));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let cert = ServerCert::make(&tmp.join("pki"));
    let reg = Registry::start_tls(5471, None, Some((&cert, false)));
    let host = reg.host();
    let certs = tmp.join("certs.d");
    let host_dir = cert.install_ca(&certs, &host);
    // The same CA for the name the certificate does not list.
    cert.install_ca(&certs, "localhost:5471");

    // skopeo, trusting the same directory, puts the fixture in.
    let f = Fixtures::get();
    Cmd::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-cert-dir"])
        .arg(&host_dir)
        .arg(format!(
            "oci:{}:latest",
            f.dir().join("busybox-oci").display()
        ))
        .arg(format!("docker://{host}/kcore/busybox:1"))
        .timeout(Duration::from_secs(120))
        .ok();
    let manifest = fixture_env("MANIFEST_DIGEST");

    let certs_flag = certs.display().to_string();
    let d = Daemon::start_with("native", &["--certs-dir", &certs_flag]);
    let info: serde_json::Value =
        serde_json::from_str(&d.ok(&["info", "--format", "json"]).stdout).unwrap();
    assert_eq!(info["CertsDirs"], serde_json::json!([certs_flag]));
    let name = format!("{host}/kcore/busybox:1");
    let out = d.ok(&["pull", &name]);
    assert!(
        out.stdout.contains(&format!("Digest: {manifest}\n")),
        "{out}"
    );

    // Push under another name; skopeo reads back the same manifest, byte for byte.
    let pushed = format!("{host}/kcore/pushed:2");
    d.ok(&["tag", &name, &pushed]);
    let out = d.ok(&["push", &pushed]);
    assert_eq!(pushed_digest(&out), manifest, "{out}");
    assert_eq!(
        skopeo_pull_digest(&pushed, &host_dir, None, &tmp.join("skopeo-copy")),
        manifest
    );

    // The certificate names 127.0.0.1 only: reached as localhost it is refused as such.
    let out = d
        .kapsel(&["pull", "localhost:5471/kcore/busybox:1"])
        .fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        out.stderr
            .contains("the certificate of registry localhost:5471 is not valid for localhost"),
        "{out}"
    );
    drop(d);

    // Without the CA: refused, naming the registry and where its CA goes.
    let empty = tmp.join("empty-certs.d");
    let empty_flag = empty.display().to_string();
    let d = Daemon::start_with("native", &["--certs-dir", &empty_flag]);
    let out = d.kapsel(&["pull", &name]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "the certificate of registry {host} is signed by an unknown authority"
        )),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "put the registry's CA certificate in {empty_flag}/{host}/ca.crt"
        )),
        "{out}"
    );
    assert!(d.blobs().is_empty(), "nothing stored: {:?}", d.blobs());
    drop(d);

    // Listed as insecure: HTTPS with verification skipped, as Docker does.
    let d = Daemon::start_with(
        "native",
        &["--certs-dir", &empty_flag, "--insecure-registry", &host],
    );
    let out = d.ok(&["pull", &name]);
    assert!(
        out.stdout.contains(&format!("Digest: {manifest}\n")),
        "{out}"
    );
}

#[test]
fn https_registry_with_basic_auth_and_client_certificates() {
    require_program("skopeo", "skopeo");
    let tmp = PathBuf::from(format!("/tmp/{}", unique("kcore-tls")));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let cert = ServerCert::make(&tmp.join("pki"));
    // The registry also wants a client certificate signed by the CA.
    let reg = Registry::start_tls(5472, Some(("kcore", "tls-pw")), Some((&cert, true)));
    let host = reg.host();
    let certs = tmp.join("certs.d");
    let host_dir = cert.install_ca(&certs, &host);
    let certs_flag = certs.display().to_string();
    let d = Daemon::start_with("native", &["--certs-dir", &certs_flag]);
    let f = Fixtures::get();
    d.ok(&["load", "-i", &f.docker_archive().display().to_string()]);
    let name = format!("{host}/kcore/private:1");
    d.ok(&["tag", "busybox", &name]);

    // No client certificate yet: the registry ends the handshake.
    let out = d
        .kapsel(&["login", "-u", "kcore", "--password-stdin", &host])
        .stdin(b"tls-pw\n".to_vec())
        .fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "{host} refused the client certificate (sslv3 alert bad certificate): put a client \
             certificate the registry accepts in {certs_flag}/{host}/client.cert"
        )),
        "{out}"
    );

    // A .cert without its .key is an error that says so.
    std::fs::copy(&cert.client_cert, host_dir.join("client.cert")).unwrap();
    let out = d.kapsel(&["pull", &name]).fails();
    assert!(
        out.stderr.contains("the client certificate has no key"),
        "{out}"
    );
    std::fs::copy(&cert.client_key, host_dir.join("client.key")).unwrap();

    // Anonymous push: refused with what to do.
    let out = d.kapsel(&["push", &name]).fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    assert!(
        out.stderr.contains(&format!("kapsel login {host}")),
        "{out}"
    );
    let out = d
        .kapsel(&["login", "-u", "kcore", "--password-stdin", &host])
        .stdin(b"wrong\n".to_vec())
        .fails();
    assert_eq!(out.exit_code(), 1, "{out}");
    let out = d
        .kapsel(&["login", "-u", "kcore", "--password-stdin", &host])
        .stdin(b"tls-pw\n".to_vec())
        .ok();
    assert_eq!(out.stdout, "Login Succeeded\n");

    let out = d.ok(&["push", &name]);
    let digest = pushed_digest(&out);
    assert_eq!(
        skopeo_pull_digest(&name, &host_dir, Some("kcore:tls-pw"), &tmp.join("copy")),
        digest
    );
    d.ok(&["rmi", &name]);
    let out = d.ok(&["pull", &name]);
    assert!(out.stdout.contains(&format!("Digest: {digest}\n")), "{out}");
}

/// Removes a directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
