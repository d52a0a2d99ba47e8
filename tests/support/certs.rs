//! Throw-away certificates for the TLS tests, made once per test run with `rcgen`: a CA, the
//! servers' certificate for `localhost` and `127.0.0.1`, a certificate for another name, an
//! expired one, a client certificate, and a second CA that signed nothing the servers use (the
//! "wrong CA"). The TLS servers listen on 127.0.0.1 and 127.0.0.2, so that connecting to
//! 127.0.0.2 meets a certificate that does not name the host ([`MISNAMED_HOST`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A loopback address the servers listen on that their certificate does not name.
pub const MISNAMED_HOST: &str = "127.0.0.2";

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    /// Copies both files into `dir` as `<stem>.crt`/`<stem>.key`, the key readable by its
    /// owner only, and hands them to `owner` (uid, gid) if given: servers that check their
    /// key's permissions (PostgreSQL) or run as a user of their own want that.
    pub fn copy_to(&self, dir: &Path, stem: &str, owner: Option<(u32, u32)>) -> Pair {
        let copy = Pair {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::copy(&self.cert, &copy.cert).expect("copy a certificate");
        std::fs::copy(&self.key, &copy.key).expect("copy a key");
        std::fs::set_permissions(&copy.key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod a key");
        if let Some((uid, gid)) = owner {
            for path in [&copy.cert, &copy.key] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
            }
        }
        copy
    }

    /// The certificate and key in one file, as MongoDB's `tlsCertificateKeyFile` wants.
    pub fn combined(&self) -> PathBuf {
        let path = self.cert.with_extension("both.pem");
        if !path.exists() {
            let mut both = std::fs::read(&self.cert).expect("read a certificate");
            both.extend(std::fs::read(&self.key).expect("read a key"));
            std::fs::write(&path, both).expect("write the combined file");
        }
        path
    }
}

/// How a TLS test server is set up, the same for every server kind: it accepts TLS
/// connections only, presents `pair`, and trusts client certificates signed by
/// [`Certs::ca`]; with `client_certificates` it refuses clients without one.
#[derive(Debug, Clone)]
pub struct TlsServer {
    pub pair: Pair,
    pub client_certificates: bool,
}

impl TlsServer {
    /// Presents [`Certs::server`], which names `localhost` and `127.0.0.1`.
    pub fn verified() -> Self {
        TlsServer::presenting(&shared().server)
    }

    /// Presents [`Certs::expired`].
    pub fn expired() -> Self {
        TlsServer::presenting(&shared().expired)
    }

    /// Presents [`Certs::wrong_name`], for servers that cannot listen on [`MISNAMED_HOST`].
    pub fn misnamed() -> Self {
        TlsServer::presenting(&shared().wrong_name)
    }

    /// The same server, refusing clients without a certificate signed by [`Certs::ca`].
    pub fn with_client_certificates(self) -> Self {
        TlsServer {
            client_certificates: true,
            ..self
        }
    }

    fn presenting(pair: &Pair) -> Self {
        TlsServer {
            pair: pair.clone(),
            client_certificates: false,
        }
    }
}

/// The certificates of one test run, in a temporary directory of their own.
pub struct Certs {
    _dir: tempfile::TempDir,
    /// The CA that signed every certificate below.
    pub ca: PathBuf,
    /// Another CA, which signed nothing the servers present.
    pub other_ca: PathBuf,
    /// The servers' certificate: `localhost` and `127.0.0.1`.
    pub server: Pair,
    /// Signed by [`Certs::ca`], but for `wrong.example` only.
    pub wrong_name: Pair,
    /// For `localhost` and `127.0.0.1`, signed by [`Certs::ca`], but expired in 2021.
    pub expired: Pair,
    /// A client certificate (CN `singleton-test`) signed by [`Certs::ca`].
    pub client: Pair,
    /// A client certificate signed by [`Certs::other_ca`], which servers refuse.
    pub stranger: Pair,
}

/// The certificates of this test run, made on first use.
pub fn shared() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(make)
}

fn make() -> Certs {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the certificates' directory");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write a certificate file");
        // Readable by servers that run as a user of their own (MariaDB, PostgreSQL).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .expect("chmod a certificate file");
        path
    };

    let (ca_params, ca_key) = authority("singleton test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
    let ca = write("ca.pem", ca_cert.pem());
    let ca_issuer = Issuer::new(ca_params, ca_key);

    let (other_params, other_key) = authority("some other CA");
    let other_cert = other_params
        .self_signed(&other_key)
        .expect("self-sign a CA");
    let other_ca = write("other-ca.pem", other_cert.pem());
    let other_issuer = Issuer::new(other_params, other_key);

    let pair = |stem: &str, params: CertificateParams, issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().expect("generate a key");
        let cert = params.signed_by(&key, issuer).expect("sign a certificate");
        Pair {
            cert: write(&format!("{stem}.crt"), cert.pem()),
            key: write(&format!("{stem}.key"), key.serialize_pem()),
        }
    };
    let server = pair(
        "server",
        leaf(&["localhost", "127.0.0.1"], false),
        &ca_issuer,
    );
    let wrong_name = pair("wrong-name", leaf(&["wrong.example"], false), &ca_issuer);
    let mut old = leaf(&["localhost", "127.0.0.1"], false);
    old.not_before = rcgen::date_time_ymd(2020, 1, 1);
    old.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = pair("expired", old, &ca_issuer);
    let client = pair("client", leaf(&["singleton-test"], true), &ca_issuer);
    let stranger = pair("stranger", leaf(&["singleton-test"], true), &other_issuer);
    Certs {
        _dir: dir,
        ca,
        other_ca,
        server,
        wrong_name,
        expired,
        client,
        stranger,
    }
}

fn authority(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params, KeyPair::generate().expect("generate a CA key"))
}

/// A server certificate for `names`, or a client certificate with the first as its CN.
fn leaf(names: &[&str], client: bool) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    params
}
