//! A typed client of a running coordinator, for `fold-coordinator submit`,
//! `status` and `optimal`: each call returns what the coordinator answered
//! ([`crate::output`] renders it, the binary prints it).

use crate::channel::{Client, Connection};
use crate::error::{Error, Result};
use crate::interner::Version;
use crate::output::Submitted;
use crate::proto::{TEXT_CHUNK_BYTES, v1};

/// A connection to a coordinator's Coordinator service.
pub struct CoordinatorClient {
    client: Client,
}

impl CoordinatorClient {
    /// Connects as `connection` says.
    pub async fn connect(connection: &Connection) -> Result<Self> {
        Ok(Self {
            client: connection.connect().await?,
        })
    }

    /// Submits `text`, named `name`, as the next version.
    pub async fn submit(&mut self, name: &str, text: String) -> Result<Submitted> {
        let chunks = text_chunks(name, text.into_bytes());
        let reply = self
            .client
            .submit(tokio_stream::iter(chunks))
            .await?
            .into_inner();
        Ok(Submitted {
            version: Version::new(reply.version),
            bytes: reply.bytes,
            hash: reply.hash,
        })
    }

    /// Watches `version` until it is done, showing each update to
    /// `progress`; returns its status then.
    pub async fn wait_for(
        &mut self,
        version: Version,
        mut progress: impl FnMut(&v1::VersionStatus, &v1::StatusReply),
    ) -> Result<v1::VersionStatus> {
        let mut updates = self
            .client
            .watch_status(v1::StatusRequest {
                version: version.get(),
                ..Default::default()
            })
            .await?
            .into_inner();
        while let Some(reply) = updates.message().await? {
            let Some(status) = reply.versions.first() else {
                continue;
            };
            progress(status, &reply);
            if status.state() == v1::VersionState::Done {
                return Ok(status.clone());
            }
        }
        Err(Error::Connect(format!(
            "the status stream of version {version} ended before it was done"
        )))
    }

    /// The status of every version, with up to `units` units of each and
    /// the connected workers when asked.
    pub async fn status(&mut self, units: u32, workers: bool) -> Result<v1::StatusReply> {
        let request = v1::StatusRequest {
            units,
            workers,
            ..Default::default()
        };
        Ok(self.client.status(request).await?.into_inner())
    }

    /// The optimal ortho of a version (0: the latest).
    pub async fn optimal(&mut self, version: Version) -> Result<v1::OptimalReply> {
        let request = v1::OptimalRequest {
            version: version.get(),
        };
        Ok(self.client.optimal(request).await?.into_inner())
    }
}

/// A text as Submit chunks; the first carries the name.
fn text_chunks(name: &str, bytes: Vec<u8>) -> Vec<v1::SubmitChunk> {
    let mut chunks: Vec<v1::SubmitChunk> = bytes
        .chunks(TEXT_CHUNK_BYTES)
        .map(|data| v1::SubmitChunk {
            data: data.to_vec(),
            name: String::new(),
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(v1::SubmitChunk::default());
    }
    chunks[0].name = name.to_owned();
    chunks
}
