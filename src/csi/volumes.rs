//! The published volumes: publish, unpublish, refresh and recovery.
//!
//! Each target path has a slot with its own lock, so that a publish, an unpublish and a
//! refresh of one volume never interleave while different volumes proceed in parallel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::feed::Notice;
use super::mounts::{self, MountError};
use super::request::{self, Publish};
use super::state::{StateDir, StateError, VolumeRecord};
use super::writer::{self, Outcome, WriteError};
use crate::delivery::{ContentError, ContentSource, Watched};

/// Why a volume call failed; each variant is one gRPC code. Messages name volumes, paths and
/// objects, never values or tokens.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<ContentError> for VolumeError {
    fn from(err: ContentError) -> Self {
        match err {
            ContentError::InvalidArgument(m) => Self::InvalidArgument(m),
            ContentError::PermissionDenied(m) => Self::PermissionDenied(m),
            ContentError::NotFound(m) => Self::NotFound(m),
            ContentError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<WriteError> for VolumeError {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Name(_) | WriteError::Conflict(_) => Self::InvalidArgument(err.to_string()),
            WriteError::Io { .. } => Self::Internal(crate::redact::chain(&err)),
        }
    }
}

impl From<MountError> for VolumeError {
    fn from(err: MountError) -> Self {
        Self::Internal(crate::redact::chain(&err))
    }
}

impl From<StateError> for VolumeError {
    fn from(err: StateError) -> Self {
        Self::Internal(crate::redact::chain(&err))
    }
}

/// A published volume.
struct Volume {
    record: VolumeRecord,
    watches: Vec<Watched>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Volume>>>;

/// tmpfs mounts taken off one target at most in one unpublish.
const MAX_STACKED_MOUNTS: usize = 8;

/// Settings of every volume.
#[derive(Debug, Clone)]
pub struct VolumeSettings {
    /// Size limit of each tmpfs, in bytes.
    pub size_bytes: u64,
    /// The token audience kubelet is asked for.
    pub audience: String,
}

/// Every volume this plugin has published on this node.
pub struct Volumes {
    source: Arc<dyn ContentSource>,
    state: StateDir,
    settings: VolumeSettings,
    slots: Mutex<BTreeMap<PathBuf, Slot>>,
}

impl Volumes {
    pub fn new(source: Arc<dyn ContentSource>, state: StateDir, settings: VolumeSettings) -> Self {
        Self {
            source,
            state,
            settings,
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn audience(&self) -> &str {
        &self.settings.audience
    }

    fn slot(&self, target: &Path) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(target.to_owned()).or_default().clone()
    }

    fn existing_slots(&self) -> Vec<Slot> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.values().cloned().collect()
    }

    fn drop_slot(&self, target: &Path, slot: &Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots
            .get(target)
            .is_some_and(|held| Arc::ptr_eq(held, slot))
        {
            slots.remove(target);
        }
    }

    /// NodePublishVolume. A first publish mounts and writes, all or nothing; publishing the
    /// same volume at the same target again takes the new token and rewrites the contents in
    /// place, without mounting again.
    pub async fn publish(&self, publish: Publish) -> Result<(), VolumeError> {
        let watches = self.source.watches(&publish.attributes, &publish.pod)?;
        let slot = self.slot(&publish.target);
        let mut held = slot.lock().await;
        if let Some(volume) = held.as_mut() {
            if volume.record.volume_id != publish.volume_id {
                return Err(VolumeError::AlreadyExists(format!(
                    "{} is published for volume {}, not {}",
                    publish.target.display(),
                    volume.record.volume_id,
                    publish.volume_id
                )));
            }
            if mounts::is_tmpfs_mount_point(&publish.target)? {
                return self.republish(volume, publish, watches).await;
            }
            // Unmounted behind our back: start again.
            tracing::warn!(target_path = %publish.target.display(), "volume no longer mounted; publishing afresh");
            *held = None;
        }
        let volume = self.first_publish(publish, watches).await?;
        *held = Some(volume);
        Ok(())
    }

    async fn republish(
        &self,
        volume: &mut Volume,
        publish: Publish,
        watches: Vec<Watched>,
    ) -> Result<(), VolumeError> {
        // The fresh token is kept even when the contents cannot be had now, so that later
        // refreshes can use it.
        volume.record.token = publish.token;
        volume.record.pod = publish.pod;
        volume.record.attributes = publish.attributes;
        volume.watches = watches;
        self.state.save(&volume.record)?;
        let files = self
            .source
            .files(
                &volume.record.attributes,
                &volume.record.pod,
                &volume.record.token,
            )
            .await?;
        let outcome = writer::write(&volume.record.target, &files, volume.record.mount_group)?;
        tracing::debug!(volume_id = %volume.record.volume_id, changed = (outcome == Outcome::Written), "republished");
        Ok(())
    }

    async fn first_publish(
        &self,
        publish: Publish,
        watches: Vec<Watched>,
    ) -> Result<Volume, VolumeError> {
        let target = publish.target.clone();
        // A tmpfs left from a run that died between mounting and remembering is ours: kubelet
        // gives each volume its own target path.
        if mounts::is_tmpfs_mount_point(&target)? {
            mounts::unmount(&target)?;
        }
        if !mounts::mounts_at(&target)?.is_empty() {
            return Err(VolumeError::FailedPrecondition(format!(
                "{} is already a mount point of something else",
                target.display()
            )));
        }
        let files = self
            .source
            .files(&publish.attributes, &publish.pod, &publish.token)
            .await?;
        // Refuse bad names before anything is made; the writer checks them again.
        writer::check(&files)?;
        let created = match std::fs::create_dir(&target) {
            Ok(()) => true,
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && target.is_dir() => false,
            Err(err) => {
                return Err(VolumeError::Internal(format!(
                    "cannot create {}: {err}",
                    target.display()
                )));
            }
        };
        let record = VolumeRecord {
            volume_id: publish.volume_id,
            target: target.clone(),
            mount_group: publish.mount_group,
            attributes: publish.attributes,
            pod: publish.pod,
            token: publish.token,
        };
        let mounted = mounts::mount_tmpfs(&target, self.settings.size_bytes, record.mount_group);
        let result = match mounted {
            Ok(()) => writer::write(&target, &files, record.mount_group)
                .map_err(VolumeError::from)
                .and_then(|_| self.state.save(&record).map_err(VolumeError::from)),
            Err(err) => Err(err.into()),
        };
        if let Err(err) = result {
            if mounts::is_tmpfs_mount_point(&target).unwrap_or(true)
                && let Err(unmount) = mounts::unmount(&target)
            {
                tracing::error!(error = %crate::redact::chain(&unmount), "rollback could not unmount");
            }
            if created {
                let _ = std::fs::remove_dir(&target);
            }
            let _ = self.state.remove(&target);
            return Err(err);
        }
        tracing::info!(volume_id = %record.volume_id, namespace = %record.pod.namespace, pod = %record.pod.name, "published");
        Ok(Volume { record, watches })
    }

    /// NodeUnpublishVolume: unmount, remove the target directory, forget the volume. A target
    /// that is not there, or not mounted, succeeds.
    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<(), VolumeError> {
        let slot = self.slot(target);
        let mut held = slot.lock().await;
        if let Some(volume) = held.as_ref()
            && volume.record.volume_id != volume_id
        {
            return Err(VolumeError::NotFound(format!(
                "{} holds volume {}, not {volume_id}",
                target.display(),
                volume.record.volume_id
            )));
        }
        // Stacked tmpfs mounts (a publish raced by a crash) come off one at a time.
        for _ in 0..MAX_STACKED_MOUNTS {
            if !mounts::is_tmpfs_mount_point(target)? {
                break;
            }
            mounts::unmount(target)?;
        }
        match std::fs::remove_dir(target) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(VolumeError::Internal(format!(
                    "cannot remove {}: {err}",
                    target.display()
                )));
            }
        }
        self.state.remove(target)?;
        if held.take().is_some() {
            tracing::info!(volume_id, "unpublished");
        }
        drop(held);
        self.drop_slot(target, &slot);
        Ok(())
    }

    /// Takes back the volumes of the state directory whose tmpfs is still mounted, and forgets
    /// the rest. Returns how many were taken back.
    pub fn recover(&self) -> Result<usize, VolumeError> {
        let mut recovered = 0;
        for (path, record) in self.state.load_all()? {
            let record = match record {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(error = %crate::redact::chain(&err), "dropping an unreadable state file");
                    self.state.discard(&path)?;
                    continue;
                }
            };
            if path != self.state.file_for(&record.target)
                || !mounts::is_tmpfs_mount_point(&record.target)?
            {
                tracing::info!(volume_id = %record.volume_id, "forgetting a volume that is no longer mounted");
                self.state.discard(&path)?;
                continue;
            }
            let watches = match self.source.watches(&record.attributes, &record.pod) {
                Ok(watches) => watches,
                Err(err) => {
                    tracing::warn!(volume_id = %record.volume_id, error = %err, "cannot tell what a recovered volume reads; it refreshes on resync only");
                    Vec::new()
                }
            };
            let slot = self.slot(&record.target);
            let Ok(mut held) = slot.try_lock() else {
                continue;
            };
            *held = Some(Volume { record, watches });
            recovered += 1;
        }
        Ok(recovered)
    }

    /// Rewrites every volume that reads what `notice` names.
    pub async fn refresh_matching(&self, notice: &Notice) {
        for slot in self.existing_slots() {
            let matches = slot
                .lock()
                .await
                .as_ref()
                .is_some_and(|volume| volume.watches.iter().any(|w| notice.matches(w)));
            if matches {
                refresh_slot(self, &slot).await;
            }
        }
    }

    /// Rewrites every volume (the safety resync).
    pub async fn refresh_all(&self) {
        for slot in self.existing_slots() {
            refresh_slot(self, &slot).await;
        }
    }
}

/// Fetches a volume's files again with its stored token and writes them if they changed. A
/// failure keeps the files the volume has and is logged; an expired token waits for kubelet's
/// next republish.
async fn refresh_slot(volumes: &Volumes, slot: &Slot) {
    let mut held = slot.lock().await;
    let Some(volume) = held.as_mut() else {
        return;
    };
    let record = &volume.record;
    if request::expired(&record.token, time::OffsetDateTime::now_utc()) {
        tracing::info!(volume_id = %record.volume_id, "token expired; waiting for kubelet's republish");
        return;
    }
    match mounts::is_tmpfs_mount_point(&record.target) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(volume_id = %record.volume_id, "no longer mounted; not refreshed");
            return;
        }
        Err(err) => {
            tracing::warn!(volume_id = %record.volume_id, error = %crate::redact::chain(&err), "refresh skipped");
            return;
        }
    }
    let files = match volumes
        .source
        .files(&record.attributes, &record.pod, &record.token)
        .await
    {
        Ok(files) => files,
        Err(err) => {
            tracing::warn!(volume_id = %record.volume_id, error = %err, "refresh failed; the volume keeps its files");
            return;
        }
    };
    match writer::write(&record.target, &files, record.mount_group) {
        Ok(Outcome::Written) => tracing::info!(volume_id = %record.volume_id, "refreshed"),
        Ok(Outcome::Unchanged) => {}
        Err(err) => {
            tracing::warn!(volume_id = %record.volume_id, error = %crate::redact::chain(&err), "refresh failed; the volume keeps its files");
        }
    }
}
