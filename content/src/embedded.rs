//! The embedded backend: content in plain files under a data directory.
//!
//! Layout:
//!
//! ```text
//! <root>/objects/<key>   the content, one file per object
//! <root>/pins/<key>      an empty file while the object is pinned
//! <root>/tmp/            files being written; anything left here after a crash is garbage
//! ```
//!
//! `<key>` is the CIDv1 (base32) of the object's root block, so a CIDv0 and its CIDv1
//! form find the same file. Writes go to `tmp/` first, are synced, then renamed into
//! `objects/`: an object file is either absent or complete. Reads are verified against
//! the CID asked for, so a file damaged on disk is reported, never served.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::store::check_size;
use crate::{
    AddOptions, ContentError, ContentStore, DEFAULT_MAX_OBJECT_SIZE, FileHasher, Verifier, cid_of,
    verify,
};

/// Bytes read per step when streaming a file in or out.
const STREAM_BUFFER: usize = 1 << 20;

/// Content-addressed files under a data directory; see the module docs for the layout.
#[derive(Debug)]
pub struct EmbeddedStore {
    root: PathBuf,
    options: AddOptions,
    max_object_size: u64,
    temp_counter: AtomicU64,
}

impl EmbeddedStore {
    /// Opens (creating if needed) a store under `root`, computing CIDv1 with raw leaves
    /// (`ipfs add --cid-version=1`) and accepting objects up to
    /// [`DEFAULT_MAX_OBJECT_SIZE`].
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, ContentError> {
        Self::open_with(root, AddOptions::default(), DEFAULT_MAX_OBJECT_SIZE).await
    }

    /// Opens a store with explicit CID options and object size limit.
    pub async fn open_with(
        root: impl Into<PathBuf>,
        options: AddOptions,
        max_object_size: u64,
    ) -> Result<Self, ContentError> {
        let root = root.into();
        for dir in ["objects", "pins", "tmp"] {
            let path = root.join(dir);
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(|e| ContentError::io(&path, e))?;
        }
        // Leftovers of writes interrupted by a crash are never referenced: drop them.
        let tmp = root.join("tmp");
        let mut entries = tokio::fs::read_dir(&tmp)
            .await
            .map_err(|e| ContentError::io(&tmp, e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| ContentError::io(&tmp, e))?
        {
            let path = entry.path();
            tokio::fs::remove_file(&path)
                .await
                .map_err(|e| ContentError::io(&path, e))?;
        }
        Ok(Self {
            root,
            options,
            max_object_size,
            temp_counter: AtomicU64::new(0),
        })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn key(cid: &Cid) -> String {
        match cid.version() {
            cid::Version::V0 => cid.into_v1().map(|c| c.to_string()).unwrap_or_default(),
            cid::Version::V1 => cid.to_string(),
        }
    }

    fn object_path(&self, cid: &Cid) -> PathBuf {
        self.root.join("objects").join(Self::key(cid))
    }

    fn pin_path(&self, cid: &Cid) -> PathBuf {
        self.root.join("pins").join(Self::key(cid))
    }

    fn temp_path(&self) -> PathBuf {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    /// Moves a complete, synced temp file into place and syncs the directory so the
    /// rename survives a crash.
    async fn commit(&self, temp: &Path, cid: &Cid) -> Result<(), ContentError> {
        let dest = self.object_path(cid);
        tokio::fs::rename(temp, &dest)
            .await
            .map_err(|e| ContentError::io(&dest, e))?;
        sync_dir(&self.root.join("objects")).await
    }

    async fn write_pin(&self, cid: &Cid) -> Result<(), ContentError> {
        let path = self.pin_path(cid);
        tokio::fs::write(&path, b"")
            .await
            .map_err(|e| ContentError::io(&path, e))?;
        sync_dir(&self.root.join("pins")).await
    }

    /// Streams a file into the store without holding it in memory, pins it and returns
    /// its CID.
    pub async fn put_file(&self, source: impl AsRef<Path>) -> Result<Cid, ContentError> {
        let source = source.as_ref();
        let mut input = tokio::fs::File::open(source)
            .await
            .map_err(|e| ContentError::io(source, e))?;
        let temp = self.temp_path();
        let result = self.stream_into_temp(&mut input, &temp, source).await;
        let cid = match result {
            Ok(cid) => cid,
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(e);
            }
        };
        self.commit(&temp, &cid).await?;
        self.write_pin(&cid).await?;
        tracing::debug!(target: "content::embedded", %cid, source = %source.display(), "stored file");
        Ok(cid)
    }

    async fn stream_into_temp(
        &self,
        input: &mut tokio::fs::File,
        temp: &Path,
        source: &Path,
    ) -> Result<Cid, ContentError> {
        let mut output = tokio::fs::File::create(temp)
            .await
            .map_err(|e| ContentError::io(temp, e))?;
        let mut hasher = FileHasher::new(self.options);
        let mut buffer = vec![0u8; STREAM_BUFFER];
        loop {
            let n = input
                .read(&mut buffer)
                .await
                .map_err(|e| ContentError::io(source, e))?;
            if n == 0 {
                break;
            }
            check_size(hasher.len() + n as u64, self.max_object_size)?;
            hasher.update(&buffer[..n]);
            output
                .write_all(&buffer[..n])
                .await
                .map_err(|e| ContentError::io(temp, e))?;
        }
        output
            .sync_all()
            .await
            .map_err(|e| ContentError::io(temp, e))?;
        Ok(hasher.finish())
    }

    /// Copies the content of `cid` to `dest`, verified: the file appears at `dest`
    /// (by rename) only after the whole content matched its CID.
    pub async fn export_to_file(
        &self,
        cid: &Cid,
        dest: impl AsRef<Path>,
    ) -> Result<(), ContentError> {
        let dest = dest.as_ref();
        let source = self.object_path(cid);
        let mut input = match tokio::fs::File::open(&source).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound(*cid));
            }
            Err(e) => return Err(ContentError::io(&source, e)),
        };
        let file_name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = dest.with_file_name(format!(".{file_name}.partial"));
        let result = async {
            let mut output = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| ContentError::io(&partial, e))?;
            let mut verifier = Verifier::new(cid)?;
            let mut buffer = vec![0u8; STREAM_BUFFER];
            loop {
                let n = input
                    .read(&mut buffer)
                    .await
                    .map_err(|e| ContentError::io(&source, e))?;
                if n == 0 {
                    break;
                }
                verifier.update(&buffer[..n]);
                output
                    .write_all(&buffer[..n])
                    .await
                    .map_err(|e| ContentError::io(&partial, e))?;
            }
            verifier.finish()?;
            output
                .sync_all()
                .await
                .map_err(|e| ContentError::io(&partial, e))
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, dest)
            .await
            .map_err(|e| ContentError::io(dest, e))
    }

    /// Deletes every object that is not pinned; returns how many were deleted.
    pub async fn gc(&self) -> Result<usize, ContentError> {
        let objects = self.root.join("objects");
        let mut entries = tokio::fs::read_dir(&objects)
            .await
            .map_err(|e| ContentError::io(&objects, e))?;
        let mut removed = 0;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| ContentError::io(&objects, e))?
        {
            let pin = self.root.join("pins").join(entry.file_name());
            if tokio::fs::try_exists(&pin)
                .await
                .map_err(|e| ContentError::io(&pin, e))?
            {
                continue;
            }
            let path = entry.path();
            tokio::fs::remove_file(&path)
                .await
                .map_err(|e| ContentError::io(&path, e))?;
            removed += 1;
        }
        tracing::debug!(target: "content::embedded", removed, "garbage collected");
        Ok(removed)
    }

    /// Whether `cid` is pinned.
    pub async fn is_pinned(&self, cid: &Cid) -> Result<bool, ContentError> {
        let path = self.pin_path(cid);
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| ContentError::io(&path, e))
    }
}

async fn sync_dir(dir: &Path) -> Result<(), ContentError> {
    let handle = tokio::fs::File::open(dir)
        .await
        .map_err(|e| ContentError::io(dir, e))?;
    handle
        .sync_all()
        .await
        .map_err(|e| ContentError::io(dir, e))
}

/// Runs CPU-bound hashing off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ContentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ContentError::Task(e.to_string()))
}

#[async_trait]
impl ContentStore for EmbeddedStore {
    fn add_options(&self) -> AddOptions {
        self.options
    }

    fn max_object_size(&self) -> u64 {
        self.max_object_size
    }

    async fn put(&self, bytes: Bytes) -> Result<Cid, ContentError> {
        check_size(bytes.len() as u64, self.max_object_size)?;
        let options = self.options;
        let hashed = bytes.clone();
        let cid = blocking(move || cid_of(&hashed, options)).await?;
        // An existing object is trusted only after it verifies; a damaged one is
        // replaced by these (correct) bytes.
        let intact = match self.get(&cid).await {
            Ok(_) => true,
            Err(ContentError::NotFound(_) | ContentError::Mismatch { .. }) => false,
            Err(e) => return Err(e),
        };
        if !intact {
            let temp = self.temp_path();
            let written = async {
                let mut file = tokio::fs::File::create(&temp)
                    .await
                    .map_err(|e| ContentError::io(&temp, e))?;
                file.write_all(&bytes)
                    .await
                    .map_err(|e| ContentError::io(&temp, e))?;
                file.sync_all()
                    .await
                    .map_err(|e| ContentError::io(&temp, e))
            }
            .await;
            if let Err(e) = written {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(e);
            }
            self.commit(&temp, &cid).await?;
        }
        self.write_pin(&cid).await?;
        tracing::debug!(target: "content::embedded", %cid, size = bytes.len(), "stored");
        Ok(cid)
    }

    async fn get(&self, cid: &Cid) -> Result<Bytes, ContentError> {
        let path = self.object_path(cid);
        let metadata = match tokio::fs::metadata(&path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound(*cid));
            }
            Err(e) => return Err(ContentError::io(&path, e)),
        };
        check_size(metadata.len(), self.max_object_size)?;
        let bytes = Bytes::from(
            tokio::fs::read(&path)
                .await
                .map_err(|e| ContentError::io(&path, e))?,
        );
        let expected = *cid;
        let checked = bytes.clone();
        blocking(move || verify(&expected, &checked)).await??;
        Ok(bytes)
    }

    async fn has(&self, cid: &Cid) -> Result<bool, ContentError> {
        let path = self.object_path(cid);
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| ContentError::io(&path, e))
    }

    async fn pin(&self, cid: &Cid) -> Result<(), ContentError> {
        if !self.has(cid).await? {
            return Err(ContentError::NotFound(*cid));
        }
        self.write_pin(cid).await
    }

    async fn unpin(&self, cid: &Cid) -> Result<(), ContentError> {
        let path = self.pin_path(cid);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContentError::io(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_round_trip_and_pins() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let cid = store.put(Bytes::from_static(b"hello\n")).await.unwrap();
        assert_eq!(
            cid.to_string(),
            "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
        );
        assert_eq!(store.get(&cid).await.unwrap().as_ref(), b"hello\n");
        assert!(store.is_pinned(&cid).await.unwrap());
        store.unpin(&cid).await.unwrap();
        assert_eq!(store.gc().await.unwrap(), 1);
        assert!(matches!(
            store.get(&cid).await,
            Err(ContentError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn corrupted_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let cid = store.put(Bytes::from_static(b"original")).await.unwrap();
        std::fs::write(store.object_path(&cid), b"tampered").unwrap();
        assert!(matches!(
            store.get(&cid).await,
            Err(ContentError::Mismatch { .. })
        ));
        // Putting the same bytes again repairs the object.
        store.put(Bytes::from_static(b"original")).await.unwrap();
        assert_eq!(store.get(&cid).await.unwrap().as_ref(), b"original");
        std::fs::write(store.object_path(&cid), b"tampered").unwrap();
        let dest = dir.path().join("out");
        assert!(matches!(
            store.export_to_file(&cid, &dest).await,
            Err(ContentError::Mismatch { .. })
        ));
        assert!(!dest.exists(), "nothing appears when verification fails");
    }

    #[tokio::test]
    async fn v0_and_v1_names_share_one_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(dir.path(), AddOptions::KUBO_DEFAULT, 1024)
            .await
            .unwrap();
        let cid = store.put(Bytes::from_static(b"hello\n")).await.unwrap();
        assert_eq!(cid.version(), cid::Version::V0);
        let v1 = cid.into_v1().unwrap();
        assert_eq!(store.get(&v1).await.unwrap().as_ref(), b"hello\n");
    }

    #[tokio::test]
    async fn size_limit_applies_to_put_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(dir.path(), AddOptions::default(), 10)
            .await
            .unwrap();
        assert!(matches!(
            store.put(Bytes::from(vec![0u8; 11])).await,
            Err(ContentError::TooLarge { .. })
        ));
        let source = dir.path().join("big");
        std::fs::write(&source, vec![1u8; 100]).unwrap();
        assert!(matches!(
            store.put_file(&source).await,
            Err(ContentError::TooLarge { .. })
        ));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("objects"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn reopening_clears_interrupted_writes() {
        let dir = tempfile::tempdir().unwrap();
        drop(EmbeddedStore::open(dir.path()).await.unwrap());
        std::fs::write(dir.path().join("tmp").join("123-0"), b"half").unwrap();
        EmbeddedStore::open(dir.path()).await.unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn pin_requires_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let absent = cid_of(b"absent", AddOptions::default());
        assert!(matches!(
            store.pin(&absent).await,
            Err(ContentError::NotFound(_))
        ));
        store.unpin(&absent).await.unwrap();
    }
}
