//! Watching one file for changes, whichever way it is replaced.
//!
//! Watching the file itself loses track of it as soon as an editor writes a new file and renames
//! it over the old one, or a Kubernetes config map swaps its `..data` symlink: the watched inode
//! is gone. So [`watch_file`] watches the *directory* holding the file (and the directory of the
//! file its symlinks lead to) and keeps the events that name the file, the first hop of its
//! symlink, or its real file. Events are debounced (a save is several events); after each change
//! the watches are set up again, since a swap may have moved the real file to a new directory.
//! A watch that cannot be set up (the inotify watch limit, a missing directory) is retried.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A change is acted on once no event concerning the file came for this long...
const QUIET: Duration = Duration::from_millis(100);
/// ...or this long after its first event, whichever comes first.
const MOST_DELAY: Duration = Duration::from_millis(500);
/// How often a watch that could not be set up is tried again.
const RETRY: Duration = Duration::from_secs(5);

type Events = notify::Result<Event>;

/// Calls `on_change` each time the file at `path` may have changed (written in place, renamed
/// over, deleted, its symlink swapped), until `shutdown` is cancelled. `what` names the file in
/// logs, e.g. `auth file`. `on_change` runs on this task: keep it short and non-blocking.
pub async fn watch_file(
    path: PathBuf,
    what: &'static str,
    shutdown: CancellationToken,
    mut on_change: impl FnMut(),
) {
    let path = std::path::absolute(&path).unwrap_or(path);
    let (sender, mut events) = mpsc::unbounded_channel();
    let mut target = Target::resolve(&path);
    let mut watching = target.watch(&sender, what, true);
    loop {
        let retry = async {
            match watching.complete {
                true => std::future::pending().await,
                false => tokio::time::sleep(RETRY).await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = retry => {
                target = Target::resolve(&path);
                let again = target.watch(&sender, what, false);
                let recovered = again.complete;
                watching = again;
                if !recovered {
                    continue;
                }
                // Changes made while unwatched were missed: read the file again.
            }
            event = events.recv() => {
                let Some(event) = event else { return };
                if !target.concerns(&event, what) {
                    continue;
                }
                settle(&mut events, &target, what).await;
            }
        }
        on_change();
        // Watch again: a swap may have moved the real file, or replaced a watched directory.
        // The new watcher is set up before the old one is dropped, so no event falls between.
        target = Target::resolve(&path);
        watching = target.watch(&sender, what, watching.complete);
    }
}

/// Waits until the events concerning the file stop (a save is several events).
async fn settle(events: &mut UnboundedReceiver<Events>, target: &Target, what: &'static str) {
    let latest = Instant::now() + MOST_DELAY;
    let mut quiet = Instant::now() + QUIET;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(quiet.min(latest)) => return,
            event = events.recv() => match event {
                Some(event) if target.concerns(&event, what) => quiet = Instant::now() + QUIET,
                Some(_) => {}
                None => return,
            },
        }
    }
}

/// The directories to watch for one file, and the names whose events concern it.
struct Target {
    directories: Vec<PathBuf>,
    names: HashSet<OsString>,
}

/// A live watcher; `complete` is false when some directory could not be watched.
struct Watching {
    _watcher: Option<RecommendedWatcher>,
    complete: bool,
}

impl Target {
    fn resolve(path: &Path) -> Target {
        let mut target = Target {
            directories: Vec::new(),
            names: HashSet::new(),
        };
        target.add(path);
        // A symlink within its own directory, as Kubernetes makes them
        // (`auth.yml -> ..data/auth.yml`, `..data -> ..2024_01_01`): an update renames a new
        // `..data` over the old one, an event named by the link's first hop.
        let link = std::fs::read_link(path)
            .ok()
            .filter(|link| link.is_relative());
        if let Some(Component::Normal(first)) = link.as_ref().and_then(|l| l.components().next()) {
            target.names.insert(first.to_owned());
        }
        // The file the symlinks lead to, which may be edited in place where it lies.
        if let Ok(real) = std::fs::canonicalize(path) {
            target.add(&real);
        }
        target
    }

    fn add(&mut self, file: &Path) {
        if let (Some(directory), Some(name)) = (file.parent(), file.file_name()) {
            if !self.directories.iter().any(|known| known == directory) {
                self.directories.push(directory.to_owned());
            }
            self.names.insert(name.to_owned());
        }
    }

    /// Does `event` concern the file? Reads (ours included) do not, the end of a write does;
    /// errors and overflows may.
    fn concerns(&self, event: &Events, what: &'static str) -> bool {
        match event {
            Ok(event) if event.need_rescan() => true,
            Ok(event) => {
                let read = matches!(event.kind, EventKind::Access(access)
                    if access != AccessKind::Close(AccessMode::Write));
                !read
                    && event.paths.iter().any(|path| {
                        path.file_name()
                            .is_some_and(|name| self.names.contains(name))
                    })
            }
            Err(error) => {
                warn!(%error, "watching the {what}");
                true
            }
        }
    }

    /// Watches every directory; logs what cannot be watched (as a warning when it could be
    /// before: `was_complete`).
    fn watch(
        &self,
        sender: &UnboundedSender<Events>,
        what: &'static str,
        was_complete: bool,
    ) -> Watching {
        let sender = sender.clone();
        let watcher = notify::recommended_watcher(move |event| {
            let _ = sender.send(event);
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(error) => {
                warn!(%error, "cannot watch the {what}; SIGHUP still reloads it; retrying");
                return Watching {
                    _watcher: None,
                    complete: false,
                };
            }
        };
        let mut complete = true;
        for directory in &self.directories {
            if let Err(error) = watcher.watch(directory, RecursiveMode::NonRecursive) {
                complete = false;
                match was_complete {
                    true => warn!(directory = %directory.display(), %error,
                        "cannot watch the {what}'s directory; SIGHUP still reloads it; retrying"),
                    false => debug!(directory = %directory.display(), %error, "still cannot watch"),
                }
            }
        }
        Watching {
            _watcher: Some(watcher),
            complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(target: &Target) -> Vec<String> {
        let mut names: Vec<String> = target
            .names
            .iter()
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_plain_file_is_watched_through_its_directory() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("auth.yml");
        std::fs::write(&path, "x").unwrap();
        let target = Target::resolve(&path);
        assert_eq!(names(&target), ["auth.yml"]);
        let real = std::fs::canonicalize(directory.path()).unwrap();
        assert!(target.directories.contains(&real));
    }

    #[test]
    fn a_kubernetes_config_map_is_watched_through_its_data_link() {
        let directory = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(directory.path()).unwrap();
        std::fs::create_dir(root.join("..2024_01")).unwrap();
        std::fs::write(root.join("..2024_01/auth.yml"), "x").unwrap();
        std::os::unix::fs::symlink("..2024_01", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/auth.yml", root.join("auth.yml")).unwrap();
        let target = Target::resolve(&root.join("auth.yml"));
        assert_eq!(names(&target), ["..data", "auth.yml"]);
        assert_eq!(target.directories, [root.clone(), root.join("..2024_01")]);
    }

    #[test]
    fn reads_do_not_count_as_changes() {
        let target = Target {
            directories: Vec::new(),
            names: HashSet::from([OsString::from("auth.yml")]),
        };
        let event = |kind, path: &str| Ok(Event::new(kind).add_path(PathBuf::from(path)));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let write = EventKind::Modify(notify::event::ModifyKind::Any);
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(!target.concerns(&event(open, "/etc/auth.yml"), "file"));
        assert!(!target.concerns(&event(read, "/etc/auth.yml"), "file"));
        assert!(target.concerns(&event(write, "/etc/auth.yml"), "file"));
        assert!(target.concerns(&event(written, "/etc/auth.yml"), "file"));
        assert!(!target.concerns(&event(write, "/etc/tagcast.toml"), "file"));
    }
}
