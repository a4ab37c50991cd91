//! A leader's side of a leadership transfer (see [`crate::transfer`]):
//! learning the request from a renewal answer, and stepping down at once
//! (the default) or leaving it to the application.

use super::Session;
use crate::wire::{Kind, TransferView};

impl Session {
    /// Elections: whether this holder steps down by itself when a transfer
    /// of the leadership is asked of it (`true`, the default: it releases
    /// the moment a renewal answer carries the request, and reports the
    /// lease lost), or leaves it to the application (`false`: it keeps
    /// leading and renewing, [`transfer_requested`](Self::transfer_requested)
    /// shows the request, and the application calls
    /// [`release`](Self::release) when ready). Holds until called again;
    /// turning it on while a request is pending steps down now.
    pub fn step_down_on_transfer(&mut self, at_once: bool) {
        self.step_down_on_transfer = at_once;
        if at_once && self.transfer_requested().is_some() {
            self.step_down();
        }
    }

    /// The hand-over asked of this holder, while it holds the lease and has
    /// not stepped down: learned from the answer to its last renewal (a
    /// request withdrawn or replaced shows so at the next one).
    pub fn transfer_requested(&self) -> Option<TransferView> {
        self.transfer.clone().filter(|_| self.machine.holds())
    }

    /// Whether [`transfer_requested`](Self::transfer_requested) changed
    /// since the last call (a request arrived, or went): a driver wakes the
    /// application then.
    pub fn transfer_changed(&mut self) -> bool {
        std::mem::take(&mut self.transfer_news)
    }

    /// Takes in the transfer a grant's view carried (`None` for none).
    pub(super) fn learn_transfer(&mut self, transfer: Option<TransferView>) {
        // Elections only (see `crate::transfer`).
        let mine =
            transfer.filter(|t| self.kind == Kind::Election && t.from == self.options.holder && self.machine.holds());
        if mine != self.transfer {
            self.transfer_news = true;
            self.transfer = mine;
        }
        if self.step_down_on_transfer && self.transfer.is_some() {
            self.step_down();
        }
    }

    /// The transfer this holder stepped down for by itself (see
    /// [`step_down_on_transfer`](Self::step_down_on_transfer)), until the
    /// next acquisition: why the lease was lost, for the caller's log.
    pub fn stepped_down_for(&self) -> Option<&TransferView> {
        self.stepped_down.as_ref()
    }

    /// Releases at once and reports the lease lost (a transfer was asked).
    fn step_down(&mut self) {
        self.stepped_down = self.transfer.take();
        self.transfer_news = true;
        if self.leader.as_ref().is_some_and(|l| l.id == self.options.holder) {
            self.leader = None;
        }
        if let Some(id) = self.machine.step_down() {
            self.release = Some((id, None));
        }
    }
}
