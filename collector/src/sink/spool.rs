//! The durable spool: span batches ClickHouse could not take, kept on local disk until
//! it can.
//!
//! One file per batch, named by a sequence number (`00000000000000000042.batch`), so
//! the order of the directory listing is the order of replay. A batch file is written as
//! `.tmp`, synced (per [`FsyncPolicy`]), then renamed: a crash leaves either the whole
//! file or a `.tmp` that the next start deletes; it never leaves half a batch under a
//! `.batch` name. The file starts with a header (magic, format version, payload length,
//! CRC-32 of the payload); a file whose header or checksum does not match is moved to
//! `corrupt/` and counted instead of replayed.
//!
//! Payload: the batch's requests, each as tenant, flags and the OTLP
//! `ExportTraceServiceRequest` protobuf. Spans are spooled as received (after
//! validation), not as rows, so a replay goes through the same flattening and
//! aggregation as a direct write and the format does not change with the table schema.
//!
//! The spool holds at most `max_bytes`; [`Spool::append`] refuses beyond that and the
//! collector answers with a retryable error. One collector owns a spool directory at a
//! time (an advisory lock on `LOCK`).

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde::Deserialize;

const MAGIC: &[u8; 4] = b"CSPL";
const FORMAT_VERSION: u32 = 1;
/// Magic, version, payload length, CRC-32, reserved.
const HEADER_LEN: usize = 4 + 4 + 8 + 4 + 4;
const BATCH_EXTENSION: &str = "batch";
const TEMP_EXTENSION: &str = "tmp";
const CORRUPT_DIR: &str = "corrupt";
const LOCK_FILE: &str = "LOCK";
/// Flag bit: the request's spans count in RED aggregates.
const FLAG_COUNT_IN_AGGREGATES: u8 = 1;

/// When spooled data is forced to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Every batch file and its directory entry are synced before its requests are
    /// acknowledged: an acknowledged span survives a power loss.
    #[default]
    Always,
    /// Left to the operating system: an acknowledged span survives the collector's
    /// crash or `kill -9`, not a power loss or kernel crash.
    Never,
}

/// Why the spool could not do its part.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The batch does not fit in the spool's bound.
    #[error("spool full: {used} of {limit} bytes used, batch of {needed} bytes")]
    Full {
        /// Bytes spooled.
        used: u64,
        /// The bound.
        limit: u64,
        /// Bytes the batch needs.
        needed: u64,
    },
    /// Reading or writing the directory failed.
    #[error("spool i/o on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another collector holds the directory.
    #[error("spool directory {0} is locked by another collector")]
    Locked(PathBuf),
    /// A spooled batch failed its checks.
    #[error("spooled batch {sequence} is corrupt: {reason}")]
    Corrupt {
        /// The batch's sequence number.
        sequence: u64,
        /// What did not match.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One request, as spooled and replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledRequest {
    /// Owner of the spans.
    pub tenant: String,
    /// Whether the spans count in RED aggregates.
    pub count_in_aggregates: bool,
    /// The validated spans.
    pub request: ExportTraceServiceRequest,
}

/// A batch file in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolFile {
    /// Position in replay order.
    pub sequence: u64,
    /// Size on disk.
    pub bytes: u64,
}

/// Where and how much to spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The spool directory, created if missing.
    pub dir: PathBuf,
    /// Bound on the bytes of all batch files.
    pub max_bytes: u64,
    /// When data is forced to disk.
    pub fsync: FsyncPolicy,
}

/// Bytes in the spool and its bound, readable from any task (for backpressure and
/// metrics) while the writer owns the [`Spool`].
#[derive(Debug, Clone)]
pub struct SpoolUsage {
    bytes: Arc<AtomicU64>,
    limit: u64,
}

impl SpoolUsage {
    /// Bytes of all batch files.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the spool has reached its bound.
    pub fn is_full(&self) -> bool {
        self.bytes() >= self.limit
    }
}

/// The spool directory, owned by the writer task.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    fsync: FsyncPolicy,
    files: VecDeque<SpoolFile>,
    next_sequence: u64,
    usage: SpoolUsage,
    /// Held for the spool's lifetime; the lock goes with it.
    _lock: File,
}

impl Spool {
    /// Opens (creating) the directory, locks it, deletes unfinished `.tmp` files and
    /// lists the batches a previous run left for replay.
    pub fn open(config: &SpoolConfig) -> Result<Self, SpoolError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Locked(dir));
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let path = entry.path();
            let extension = path.extension().and_then(|extension| extension.to_str());
            let sequence = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| stem.parse::<u64>().ok());
            match (extension, sequence) {
                (Some(TEMP_EXTENSION), _) => {
                    tracing::warn!(path = %path.display(), "deleting unfinished spool file");
                    fs::remove_file(&path).map_err(io_error(&path))?;
                }
                (Some(BATCH_EXTENSION), Some(sequence)) => {
                    let bytes = entry.metadata().map_err(io_error(&path))?.len();
                    files.push(SpoolFile { sequence, bytes });
                }
                _ => {}
            }
        }
        files.sort_by_key(|file| file.sequence);
        let used: u64 = files.iter().map(|file| file.bytes).sum();
        if !files.is_empty() {
            tracing::info!(
                batches = files.len(),
                bytes = used,
                dir = %dir.display(),
                "spool holds batches from an earlier run; replaying them"
            );
        }
        Ok(Self {
            next_sequence: files.last().map_or(1, |file| file.sequence + 1),
            files: files.into(),
            usage: SpoolUsage {
                bytes: Arc::new(AtomicU64::new(used)),
                limit: config.max_bytes,
            },
            dir,
            fsync: config.fsync,
            _lock: lock,
        })
    }

    /// Whether nothing waits for replay.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Batches waiting for replay.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The shared view of the spool's size.
    pub fn usage(&self) -> SpoolUsage {
        self.usage.clone()
    }

    fn path(&self, sequence: u64, extension: &str) -> PathBuf {
        self.dir.join(format!("{sequence:020}.{extension}"))
    }

    /// Writes `requests` as the newest batch; once this returns, they survive a crash
    /// (and, with [`FsyncPolicy::Always`], a power loss).
    pub async fn append(&mut self, requests: &[SpooledRequest]) -> Result<SpoolFile, SpoolError> {
        let contents = encode_batch(requests);
        let needed = contents.len() as u64;
        let used = self.usage.bytes();
        if used.saturating_add(needed) > self.usage.limit {
            return Err(SpoolError::Full {
                used,
                limit: self.usage.limit,
                needed,
            });
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let temp = self.path(sequence, TEMP_EXTENSION);
        let path = self.path(sequence, BATCH_EXTENSION);
        let dir = self.dir.clone();
        let fsync = self.fsync;
        let written =
            tokio::task::spawn_blocking(move || write_file(&temp, &path, &dir, &contents, fsync))
                .await
                .map_err(|join_error| SpoolError::Io {
                    path: self.dir.clone(),
                    source: io::Error::other(join_error),
                })?;
        written?;
        let file = SpoolFile {
            sequence,
            bytes: needed,
        };
        self.files.push_back(file);
        self.usage.bytes.fetch_add(needed, Ordering::Relaxed);
        Ok(file)
    }

    /// The oldest batches, consecutive, together at most `max_bytes` (at least one).
    pub fn oldest(&self, max_bytes: u64) -> Vec<SpoolFile> {
        let mut total = 0;
        let mut files = Vec::new();
        for file in &self.files {
            if !files.is_empty() && total + file.bytes > max_bytes {
                break;
            }
            total += file.bytes;
            files.push(*file);
        }
        files
    }

    /// Reads and checks one batch.
    pub async fn read(&self, file: SpoolFile) -> Result<Vec<SpooledRequest>, SpoolError> {
        let path = self.path(file.sequence, BATCH_EXTENSION);
        let contents = tokio::fs::read(&path).await.map_err(io_error(&path))?;
        decode_batch(&contents).map_err(|reason| SpoolError::Corrupt {
            sequence: file.sequence,
            reason,
        })
    }

    /// Deletes replayed batches.
    pub async fn remove(&mut self, files: &[SpoolFile]) -> Result<(), SpoolError> {
        for file in files {
            let path = self.path(file.sequence, BATCH_EXTENSION);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(&path)(error)),
            }
            self.forget(*file);
        }
        Ok(())
    }

    /// Moves a corrupt batch to `corrupt/`, out of the replay order and the bound.
    pub async fn quarantine(&mut self, file: SpoolFile) -> Result<(), SpoolError> {
        let path = self.path(file.sequence, BATCH_EXTENSION);
        let corrupt_dir = self.dir.join(CORRUPT_DIR);
        tokio::fs::create_dir_all(&corrupt_dir)
            .await
            .map_err(io_error(&corrupt_dir))?;
        let target = corrupt_dir.join(format!("{:020}.{BATCH_EXTENSION}", file.sequence));
        tokio::fs::rename(&path, &target)
            .await
            .map_err(io_error(&path))?;
        self.forget(file);
        Ok(())
    }

    fn forget(&mut self, file: SpoolFile) {
        if let Some(position) = self.files.iter().position(|known| *known == file) {
            self.files.remove(position);
            self.usage.bytes.fetch_sub(file.bytes, Ordering::Relaxed);
        }
    }
}

fn write_file(
    temp: &Path,
    path: &Path,
    dir: &Path,
    contents: &[u8],
    fsync: FsyncPolicy,
) -> Result<(), SpoolError> {
    let mut file = File::create(temp).map_err(io_error(temp))?;
    let written = file.write_all(contents).and_then(|()| match fsync {
        FsyncPolicy::Always => file.sync_data(),
        FsyncPolicy::Never => Ok(()),
    });
    if let Err(error) = written {
        let _ = fs::remove_file(temp);
        return Err(io_error(temp)(error));
    }
    drop(file);
    fs::rename(temp, path).map_err(io_error(path))?;
    if fsync == FsyncPolicy::Always {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(())
}

/// A batch file's bytes: header, then each request as tenant length (u16), tenant,
/// flags (u8), request length (u32) and the request's protobuf; integers little-endian.
pub fn encode_batch(requests: &[SpooledRequest]) -> Vec<u8> {
    let payload_len: usize = requests
        .iter()
        .map(|entry| {
            2 + entry.tenant.len().min(u16::MAX as usize) + 1 + 4 + entry.request.encoded_len()
        })
        .sum();
    let mut contents = Vec::with_capacity(HEADER_LEN + payload_len);
    contents.extend_from_slice(&[0; HEADER_LEN]);
    for entry in requests {
        let tenant = truncated_tenant(&entry.tenant);
        contents.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
        contents.extend_from_slice(tenant.as_bytes());
        let flags = if entry.count_in_aggregates {
            FLAG_COUNT_IN_AGGREGATES
        } else {
            0
        };
        contents.push(flags);
        let length = entry.request.encoded_len() as u32;
        contents.extend_from_slice(&length.to_le_bytes());
        entry.request.encode_raw(&mut contents);
    }
    let payload = &contents[HEADER_LEN..];
    let checksum = crc32fast::hash(payload);
    let payload_len = payload.len() as u64;
    contents[0..4].copy_from_slice(MAGIC);
    contents[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    contents[8..16].copy_from_slice(&payload_len.to_le_bytes());
    contents[16..20].copy_from_slice(&checksum.to_le_bytes());
    contents
}

/// Tenants are short names; a tenant longer than a u16 length can say never comes from
/// the token table, but cutting on a char boundary keeps the encoder total.
fn truncated_tenant(tenant: &str) -> &str {
    let mut end = tenant.len().min(u16::MAX as usize);
    while !tenant.is_char_boundary(end) {
        end -= 1;
    }
    &tenant[..end]
}

/// Reads a batch file's bytes back, checking header and checksum.
pub fn decode_batch(contents: &[u8]) -> Result<Vec<SpooledRequest>, String> {
    let header = contents
        .get(..HEADER_LEN)
        .ok_or_else(|| format!("{} bytes, shorter than the header", contents.len()))?;
    if &header[0..4] != MAGIC {
        return Err("not a spool file (magic)".to_owned());
    }
    let version = u32::from_le_bytes(fixed(&header[4..8]));
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} is not {FORMAT_VERSION}"));
    }
    let payload_len = u64::from_le_bytes(fixed(&header[8..16]));
    let checksum = u32::from_le_bytes(fixed(&header[16..20]));
    let payload = &contents[HEADER_LEN..];
    if payload.len() as u64 != payload_len {
        return Err(format!(
            "payload of {} bytes, header says {payload_len}",
            payload.len()
        ));
    }
    if crc32fast::hash(payload) != checksum {
        return Err("checksum mismatch".to_owned());
    }
    let mut requests = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let tenant_len = u16::from_le_bytes(fixed(take(&mut rest, 2)?)) as usize;
        let tenant = std::str::from_utf8(take(&mut rest, tenant_len)?)
            .map_err(|_| "tenant is not UTF-8".to_owned())?
            .to_owned();
        let flags = take(&mut rest, 1)?[0];
        let request_len = u32::from_le_bytes(fixed(take(&mut rest, 4)?)) as usize;
        let request = ExportTraceServiceRequest::decode(take(&mut rest, request_len)?)
            .map_err(|error| format!("request: {error}"))?;
        requests.push(SpooledRequest {
            tenant,
            count_in_aggregates: flags & FLAG_COUNT_IN_AGGREGATES != 0,
            request,
        });
    }
    Ok(requests)
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if rest.len() < len {
        return Err("truncated entry".to_owned());
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

/// `N` bytes from a slice of exactly `N` (callers slice it so).
fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0; N];
    array.copy_from_slice(bytes);
    array
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    fn request(name: &str) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: name.to_owned(),
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_100_000_000,
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn batch() -> Vec<SpooledRequest> {
        vec![
            SpooledRequest {
                tenant: "default".to_owned(),
                count_in_aggregates: true,
                request: request("GET /"),
            },
            SpooledRequest {
                tenant: "team-b".to_owned(),
                count_in_aggregates: false,
                request: request("kept by an agent"),
            },
        ]
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("caracal-spool-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn batches_round_trip() {
        let requests = batch();
        assert_eq!(decode_batch(&encode_batch(&requests)).unwrap(), requests);
        assert_eq!(decode_batch(&encode_batch(&[])).unwrap(), Vec::new());
    }

    #[test]
    fn damage_is_detected() {
        let contents = encode_batch(&batch());
        let mut flipped = contents.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert_eq!(decode_batch(&flipped).unwrap_err(), "checksum mismatch");
        let truncated = &contents[..contents.len() - 3];
        assert!(decode_batch(truncated).unwrap_err().contains("header says"));
        assert!(decode_batch(&contents[..10])
            .unwrap_err()
            .contains("header"));
        let mut foreign = contents.clone();
        foreign[0] = b'X';
        assert!(decode_batch(&foreign).unwrap_err().contains("magic"));
    }

    #[tokio::test]
    async fn append_replay_remove_and_recover_after_restart() {
        let dir = temp_dir("recover");
        let config = SpoolConfig {
            dir: dir.clone(),
            max_bytes: 1 << 20,
            fsync: FsyncPolicy::Always,
        };
        let mut spool = Spool::open(&config).unwrap();
        assert!(matches!(Spool::open(&config), Err(SpoolError::Locked(_))));
        let first = spool.append(&batch()).await.unwrap();
        let second = spool.append(&batch()[..1]).await.unwrap();
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.usage().bytes(), first.bytes + second.bytes);
        assert_eq!(spool.oldest(1), vec![first]);
        assert_eq!(spool.oldest(u64::MAX), vec![first, second]);
        // A crash mid-write leaves a temp file; a restart deletes it and keeps the rest.
        fs::write(dir.join("00000000000000000003.tmp"), b"half a batch").unwrap();
        drop(spool);
        let mut spool = Spool::open(&config).unwrap();
        assert_eq!(spool.oldest(u64::MAX), vec![first, second]);
        assert!(!dir.join("00000000000000000003.tmp").exists());
        assert_eq!(spool.read(first).await.unwrap(), batch());
        spool.remove(&[first]).await.unwrap();
        assert_eq!(spool.oldest(u64::MAX), vec![second]);
        assert_eq!(spool.usage().bytes(), second.bytes);
        let third = spool.append(&batch()).await.unwrap();
        assert!(third.sequence > second.sequence);
        fs::write(dir.join("00000000000000000002.batch"), b"CSPL garbage").unwrap();
        assert!(matches!(
            spool.read(second).await,
            Err(SpoolError::Corrupt { sequence: 2, .. })
        ));
        spool.quarantine(second).await.unwrap();
        assert!(dir.join("corrupt/00000000000000000002.batch").exists());
        assert_eq!(spool.oldest(u64::MAX), vec![third]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_bound_refuses_batches_that_do_not_fit() {
        let dir = temp_dir("bound");
        let size = encode_batch(&batch()).len() as u64;
        let mut spool = Spool::open(&SpoolConfig {
            dir: dir.clone(),
            max_bytes: size + size / 2,
            fsync: FsyncPolicy::Never,
        })
        .unwrap();
        spool.append(&batch()).await.unwrap();
        assert!(matches!(
            spool.append(&batch()).await,
            Err(SpoolError::Full { .. })
        ));
        assert!(!spool.usage().is_full());
        let _ = fs::remove_dir_all(&dir);
    }
}
