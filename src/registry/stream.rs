//! Streamed uploads of blobs whose digest is known only once their bytes are made: a layer
//! written for the first time goes to the registry while it is tarred and hashed, in the same
//! pass over its sources (one chunked PATCH), and the digest comes with the final PUT.

use std::io::Write;

use reqwest::blocking::Body;

use super::client::{Ctx, RegistryClient};
use super::error::{RegistryError, Result};
use super::reference::Reference;

/// What [`RegistryClient::upload_streamed`]'s writer reports: its own result, and the digest
/// and size of the bytes it wrote.
pub struct Streamed<T> {
    pub value: T,
    pub digest: String,
    pub size: u64,
}

impl RegistryClient {
    /// Opens an upload session in `target`, streams what `write` produces into it, and closes
    /// it with the digest `write` reports. One attempt: a caller that fails here can fall back
    /// to hashing first and uploading with the retrying push.
    pub fn upload_streamed<T: Send>(
        &self,
        target: &Reference,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<Streamed<T>> + Send,
    ) -> Result<Streamed<T>> {
        let ctx = Ctx::push(target);
        let what = "streamed layer upload";
        let (mut location, limits) = self.start_upload(&ctx)?;
        if !limits.allows_streaming() {
            // the registry bounds its requests (or takes none but a monolithic PUT): a layer
            // of unknown length cannot go in one PATCH
            self.cancel_upload(&ctx, &location);
            return Err(RegistryError::UploadRules {
                host: target.registry.clone(),
                repository: target.repository.clone(),
                reason: "the registry limits upload requests, so the layer cannot be streamed"
                    .into(),
            });
        }
        let (reader, mut writer) = std::io::pipe().map_err(|e| ctx.stream(what, e))?;
        let (sent, made) = std::thread::scope(|s| {
            let maker = s.spawn(move || {
                let r = write(&mut writer);
                drop(writer);
                r
            });
            let rb = self
                .http
                .patch(location.clone())
                .timeout(crate::transport::UPLOAD_TIMEOUT)
                .header("Content-Type", "application/octet-stream")
                .body(Body::new(reader));
            let sent = self
                .send_once(&ctx, "PATCH", what, rb)
                .and_then(|resp| self.expect(&ctx, "PATCH", what, resp, &[202, 204]));
            let made = maker
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("layer writer panicked")));
            (sent, made)
        });
        let made = made.map_err(|e| ctx.stream(what, e))?;
        let resp = sent?;
        if resp.headers().contains_key(reqwest::header::LOCATION) {
            location = self.resolve_location(&ctx, what, &resp)?;
        }
        let mut put = location.clone();
        put.query_pairs_mut().append_pair("digest", &made.digest);
        let what = format!("blob {}", made.digest);
        let resp = self.send(&ctx, "PUT", &what, &mut || {
            Ok(self
                .transport
                .metadata(self.http.put(put.clone()).header("Content-Length", "0")))
        })?;
        self.expect(&ctx, "PUT", &what, resp, &[201, 204])
            .map_err(|e: RegistryError| e)?;
        self.remember_blob(target, &made.digest);
        Ok(made)
    }
}
