//! The connection to kapseld and what its errors become for a person at a terminal.

use kapsel_proto::ttrpc;

/// Errors of the CLI, printed as `kapsel: <message>` with exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to kapseld at {address}: is it running? start it with: kapseld &")]
    NotRunning { address: String },
    #[error("lost the connection to kapseld at {address}: {detail}")]
    Connection { address: String, detail: String },
    /// What the daemon answered.
    #[error("{message}")]
    Daemon { code: i32, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Registry(#[from] crate::registry::Error),
    #[error("{0}")]
    Reference(#[from] crate::registry::ReferenceError),
    #[error("{0}")]
    Credentials(#[from] crate::registry::auth::AuthError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Clients of every service on one connection.
pub struct Conn {
    pub address: String,
    pub namespace: String,
    pub images: kapsel_proto::images_ttrpc::ImagesClient,
    pub content: kapsel_proto::content_ttrpc::ContentClient,
    pub transfer: kapsel_proto::transfer_ttrpc::TransferClient,
    pub snapshots: kapsel_proto::snapshots_ttrpc::SnapshotsClient,
    pub events: kapsel_proto::events_ttrpc::EventsClient,
    pub system: kapsel_proto::system_ttrpc::SystemClient,
    pub containers: kapsel_proto::containers_ttrpc::ContainersClient,
    pub volumes: kapsel_proto::volumes_ttrpc::VolumesClient,
}

impl Conn {
    pub fn connect(address: &str, namespace: &str) -> Result<Conn> {
        // ttrpc's connect does not say why it failed in a way worth showing: a missing socket
        // and a refused connection both mean no daemon listens there.
        let c = ttrpc::Client::connect(&format!("unix://{address}")).map_err(|_| {
            Error::NotRunning {
                address: address.to_string(),
            }
        })?;
        Ok(Conn {
            address: address.to_string(),
            namespace: namespace.to_string(),
            images: kapsel_proto::images_ttrpc::ImagesClient::new(c.clone()),
            content: kapsel_proto::content_ttrpc::ContentClient::new(c.clone()),
            transfer: kapsel_proto::transfer_ttrpc::TransferClient::new(c.clone()),
            snapshots: kapsel_proto::snapshots_ttrpc::SnapshotsClient::new(c.clone()),
            events: kapsel_proto::events_ttrpc::EventsClient::new(c.clone()),
            system: kapsel_proto::system_ttrpc::SystemClient::new(c.clone()),
            containers: kapsel_proto::containers_ttrpc::ContainersClient::new(c.clone()),
            volumes: kapsel_proto::volumes_ttrpc::VolumesClient::new(c),
        })
    }

    /// A request context: no deadline (long polls bound themselves).
    pub fn ctx(&self) -> ttrpc::context::Context {
        ttrpc::context::with_timeout(0)
    }

    /// Maps a ttrpc error to what the user reads.
    pub fn err(&self, e: ttrpc::Error) -> Error {
        match e {
            ttrpc::Error::RpcStatus(s) => Error::Daemon {
                code: s.code.value(),
                message: s.message,
            },
            ttrpc::Error::Socket(detail) => Error::Connection {
                address: self.address.clone(),
                detail,
            },
            other => Error::Connection {
                address: self.address.clone(),
                detail: other.to_string(),
            },
        }
    }
}
