//! The version store: the model versions planned tasks still train from, and the current one.
//! A version is kept while a waiting task needs it as its base (counted per version) or while
//! it is the current model; the rest is forgotten at once, so memory stays flat however long
//! the run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::params::Weights;

pub struct VersionStore<W> {
    versions: BTreeMap<u64, Arc<W>>,
    /// How many waiting tasks train from each version.
    needed_by: HashMap<u64, usize>,
    current: u64,
}

impl<W> VersionStore<W> {
    /// Version 0 is `initial`.
    pub fn new(initial: W) -> Self {
        VersionStore {
            versions: BTreeMap::from([(0, Arc::new(initial))]),
            needed_by: HashMap::new(),
            current: 0,
        }
    }

    /// The versions a checkpoint holds, `current` among them.
    pub fn restore(
        versions: impl IntoIterator<Item = (u64, W)>,
        current: u64,
    ) -> Result<Self, crate::saved::StateError> {
        let versions: BTreeMap<u64, Arc<W>> = versions.into_iter().map(|(v, w)| (v, Arc::new(w))).collect();
        crate::saved::ensure(versions.contains_key(&current), || {
            format!("the checkpoint lacks its own current model (version {current})")
        })?;
        Ok(VersionStore { versions, needed_by: HashMap::new(), current })
    }

    pub fn current_version(&self) -> u64 {
        self.current
    }

    pub fn current(&self) -> &Arc<W> {
        &self.versions[&self.current]
    }

    pub fn contains(&self, version: u64) -> bool {
        self.versions.contains_key(&version)
    }

    /// A held version (the base of a task about to train).
    pub fn get(&self, version: u64) -> Arc<W> {
        self.versions[&version].clone()
    }

    /// Versions held now.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// A waiting task will train from `version`.
    pub fn need(&mut self, version: u64) {
        *self.needed_by.entry(version).or_default() += 1;
    }

    /// One fewer task needs `version`; it is forgotten when none does and it is not current.
    pub fn release(&mut self, version: u64) {
        if self.unneed(version) && version != self.current {
            self.versions.remove(&version);
        }
    }

    /// One fewer task needs `version`, but it stays until [`Self::keep_needed`] (a resume's
    /// replay: a task read later may need it again). Returns whether none needs it now.
    pub fn unneed(&mut self, version: u64) -> bool {
        let Some(count) = self.needed_by.get_mut(&version) else { return false };
        *count -= 1;
        if *count == 0 {
            self.needed_by.remove(&version);
            return true;
        }
        false
    }

    /// Forgets every version that is neither current nor needed.
    pub fn keep_needed(&mut self) {
        let (current, needed_by) = (self.current, &self.needed_by);
        self.versions.retain(|version, _| *version == current || needed_by.contains_key(version));
    }

    /// The server made `version`: it becomes current, and the old current one goes unless a
    /// task still needs it.
    pub fn advance(&mut self, version: u64, weights: W) {
        let old = std::mem::replace(&mut self.current, version);
        self.versions.insert(version, Arc::new(weights));
        if !self.needed_by.contains_key(&old) {
            self.versions.remove(&old);
        }
    }
}

impl<W: Weights> VersionStore<W> {
    /// Every held version on the host, oldest first (what a checkpoint saves).
    pub fn to_host(&self) -> Vec<(u64, Vec<f32>)> {
        self.versions.iter().map(|(v, w)| (*v, w.to_host().into_owned())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> VersionStore<Vec<f32>> {
        VersionStore::new(vec![0.0])
    }

    #[test]
    fn a_version_lives_while_a_task_needs_it_or_it_is_current() {
        let mut s = store();
        s.need(0);
        s.need(0);
        s.advance(1, vec![1.0]);
        assert!(s.contains(0) && s.contains(1), "version 0 is still needed twice");
        s.release(0);
        assert!(s.contains(0));
        s.release(0);
        assert!(!s.contains(0), "nobody needs version 0 and it is not current");
        s.advance(2, vec![2.0]);
        assert!(!s.contains(1), "the old current version goes when unneeded");
        assert_eq!((s.current_version(), s.len(), s.current()[0]), (2, 1, 2.0));
    }

    #[test]
    fn the_current_version_survives_its_last_release() {
        let mut s = store();
        s.need(0);
        s.release(0);
        assert!(s.contains(0));
        s.release(0); // an unneeded version: nothing to count down
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_replay_counts_down_without_forgetting_until_asked() {
        let mut s = VersionStore::restore([(3, vec![3.0]), (5, vec![5.0]), (7, vec![7.0])], 7).unwrap();
        s.need(3);
        assert!(s.unneed(3));
        assert_eq!(s.len(), 3, "unneed keeps the version");
        s.need(5);
        s.keep_needed();
        assert_eq!(s.to_host(), vec![(5, vec![5.0]), (7, vec![7.0])]);
    }

    #[test]
    fn a_checkpoint_without_its_current_version_is_refused() {
        let err = VersionStore::restore([(3, vec![3.0])], 4).err().unwrap();
        assert!(err.to_string().contains("version 4"), "{err}");
    }
}
