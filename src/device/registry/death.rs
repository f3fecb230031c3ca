//! The death path: how a device's death reaches its watchers, and what
//! is left of the device afterwards.
//!
//! Stakker fires the device's termination `Ret` ([`died`]; the cause is
//! decoded as `ending.rs` describes), or drops it unfired when it frees
//! the actor unended ([`unended`]); a panic in the `Drop` of the actor's
//! state completes an interrupted death ([`died_in_drop`]). A task device
//! dies through [`died_as`] directly. A device dies once: whatever comes
//! later finds it no longer live and changes nothing.
//!
//! [`died_as`] marks the slot dead in one borrow and goes one of three
//! ways, the cheapest that serves:
//! - **one watcher**, inline in the slot (the common case): it gets its
//!   `Down` directly;
//! - **the owner-watcher alone**, its owner holding a handle: it gets an
//!   [`OwnerDown`] and the cause stays in the slot, unshared, for the
//!   owner to take with its handle ([`take_cause`]; see
//!   [`device::owner`](crate::device::owner));
//! - **a record** (more watchers, links, a controller): [`drain`] takes
//!   the device's links off the devices it watched, then tells its
//!   watchers one by one, outside the borrow, holding back a panic of a
//!   raw handler until every watcher has had its `Down`. A record with
//!   nothing to drain (no watcher on its list, no link of the device's
//!   own left) is freed in the death's first borrow, and the death goes
//!   one of the two ways above.
//!
//! The cause is kept in the slot while a handle or the record can still
//! ask for it, and the slot is freed when neither is left.
//!
//! The commonest death takes a shorter way to the same result: a device
//! whose only owner dropped it while it lived, and that has no record
//! (nothing but at most one inline monitor watches it). That owner's
//! release is deferred to the death
//! ([`release_owner`](super::release_owner)), and the death ([`alone`])
//! applies it, frees the slot and takes the monitor in one borrow,
//! without decoding the cause unless that monitor needs it. Only the
//! last device so dropped takes it (the owner dropped next applies the
//! deferred release at once: devices dropped together before the queue
//! runs go the general way but for the last). Other deaths pay a compare
//! and a call for it (about 25 instructions, the price measured in
//! BENCHMARKS.md).

use super::watchers::{deliver, deliver_kept, Ready, Watch};
use super::{index, with, with_default, Control, Key, Registry, Slot, State, NIL};
use crate::cause::{Cause, Down};
use crate::device::ending::{decode, kind_of, Ending, Kept};
use crate::device::owner::OwnerDown;
use slab::Slab;
use stakker::{Fwd, StopCause};
use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Weak;

/// The device's actor terminated (`Some`), or its termination `Ret` was
/// dropped unfired because stakker freed the actor without terminating it
/// (`None`: the runtime was dropped; see [`unended`]). With
/// [`died_in_drop`], the one place a device dies.
///
/// Inlined into each device's termination `Ret`, where it only picks
/// the way: the short one does not pay the general one's stack frame.
#[inline(always)]
pub(crate) fn died(key: Key, stop: Option<StopCause>) {
    if super::take_deferred(key) {
        short(key, stop);
    } else {
        general(key, stop);
    }
}

/// The death of a device whose owner's release was deferred to it
/// ([`release_owner`](super::release_owner)): by the short path
/// ([`alone`], which applies that release) if it serves, else the
/// general one. Outside the borrow: the watcher's handler, and the drop
/// of the cause (it may hold a user's error).
#[inline(never)]
fn short(key: Key, stop: Option<StopCause>) {
    // The fall-back is written out rather than handed to `general`: that
    // call cost the short way 25 instructions (BENCHMARKS.md).
    let Some(stop) = stop else {
        super::release(key);
        return unended(key);
    };
    match alone(key, &stop) {
        // Nobody to tell: a cause that holds nothing (the commonest,
        // `Dropped`) is forgotten, skipping its drop code.
        Some(None) => match stop {
            StopCause::Failed(_) | StopCause::Killed(_) => drop(stop),
            StopCause::Stopped | StopCause::Dropped | StopCause::Lost => std::mem::forget(stop),
        },
        Some(Some(watch)) => deliver_kept(watch, key.id, decode(stop)),
        None => died_as(key, decode(stop)),
    }
}

/// A death by the general way.
#[inline(never)]
fn general(key: Key, stop: Option<StopCause>) {
    match stop {
        Some(stop) => died_as(key, decode(stop)),
        None => unended(key),
    }
}

/// The commonest death, in one borrow: a live device that no handle
/// names and that has no record, so at most one watcher, inline (a
/// device its owner dropped, watched by a supervisor or a parent, or by
/// nobody). It is counted, its slot freed and its inline watcher
/// returned; nobody can ask for its cause, so it is decoded only for
/// that watcher. `None` for any other device, which goes the general
/// way ([`died_as`]: the same result, in more steps).
///
/// Tried only for a device whose owner's release was deferred to its
/// death ([`release_owner`](super::release_owner)), so that other deaths
/// do not pay for a second lookup; that release is applied here first,
/// whichever way the death goes on.
#[inline]
fn alone(key: Key, stop: &StopCause) -> Option<Option<Watch>> {
    with_default(|r| {
        let idx = key.slot as usize;
        let first = match r.slots.get_mut(idx) {
            Some(slot) if slot.id == key.id => {
                slot.refs = slot.refs.saturating_sub(1);
                match &mut slot.state {
                    State::Live(first) if slot.refs == 0 && slot.record == NIL => first.take(),
                    _ => return None,
                }
            }
            _ => return None,
        };
        if first.is_some() {
            r.inline -= 1;
        }
        r.live -= 1;
        r.died[kind_of(stop) as usize] += 1;
        #[cfg(feature = "device-spans")]
        r.idents.remove(&r.slots[idx].actor);
        free_emptied(&mut r.slots, idx);
        Some(first.map(|first| first.watch))
    })
}

/// Frees slot `idx` of a device that just died and holds nothing any
/// more (`Live(None)`: its inline watcher taken). Forgetting the slot
/// skips dead drop code on the hottest path of all (create, drop, die).
#[inline]
fn free_emptied(slots: &mut Slab<Slot>, idx: usize) {
    let gone = slots.remove(idx);
    debug_assert!(matches!(gone.state, State::Live(None)));
    std::mem::forget(gone);
}

/// The device died with `cause`; a device no longer live (already dead,
/// or freed unended) is left as it is.
///
/// A failure's error is shared (made the `Rc` of a [`Cause`]) only if a
/// watcher or a handle other than the owner's can see it: a supervised
/// child that fails costs no copy of its error.
#[inline]
pub(crate) fn died_as(key: Key, cause: Kept) {
    // Marks the device dead and takes its inline watcher, in one borrow;
    // a device with a record (more watchers, links, a controller) goes on
    // in `drain`. `cause` is moved into the slot only when it stays there
    // unshared for the owner.
    let kind = cause.kind() as usize;
    let mut cause = Some(cause);
    // The cause once shared (kept in the slot too).
    let mut shared: Option<Cause> = None;
    let first = with_default(|r| {
        let Registry {
            slots,
            records,
            live,
            inline,
            died,
            #[cfg(feature = "device-spans")]
            idents,
            ..
        } = r;
        let Some(slot) = slots
            .get_mut(key.slot as usize)
            .filter(|slot| slot.id == key.id)
        else {
            return Death::Gone;
        };
        let (refs, mut record) = (slot.refs, slot.record);
        let State::Live(first) = &mut slot.state else {
            return Death::Gone;
        };
        let first = first.take().map(|first| first.watch);
        *live -= 1;
        died[kind] += 1;
        #[cfg(feature = "device-spans")]
        idents.remove(&slot.actor);
        if first.is_some() {
            *inline -= 1;
        }
        // A record with nothing to drain (no watcher on its list, no
        // link of its own: a device that was linked, trapped or named by
        // a `Line`, and whose links went first) goes now, and the death
        // goes on as one without a record. Dropping the weak pointer to
        // the controller runs no user code.
        if record != NIL {
            let rec = &records[record as usize];
            if rec.head == NIL && rec.watching == NIL {
                records.remove(record as usize);
                slot.record = NIL;
                record = NIL;
            }
        }
        if refs == 0 && record == NIL {
            // Nobody is left to ask: the slot goes.
            free_emptied(slots, key.slot as usize);
            return first.map_or(Death::Gone, Death::One);
        }
        let state = &mut slot.state;
        match (record, first) {
            // The owner is the only one to tell and holds a handle: the
            // cause stays here as it is, for the owner to take when it
            // drops that handle (`take_cause`).
            (NIL, Some(Watch::Owner(fwd))) => {
                *state = State::Dead(cause.take());
                Death::Owner(fwd)
            }
            // Kept, shared, for the handles (and the record) left to ask.
            // With nobody to tell, the slot keeps the cause itself: no copy.
            (NIL, None) => {
                *state = State::Dead(cause.take().map(|c| Kept::Cause(c.into_cause())));
                Death::Gone
            }
            (record, first) => {
                shared = cause.take().map(Kept::into_cause);
                *state = State::Dead(shared.clone().map(Kept::Cause));
                match record {
                    // No list: the inline watcher is the only one to tell.
                    NIL => first.map_or(Death::Gone, Death::One),
                    record => Death::Record(record as usize, first),
                }
            }
        }
    });
    // The only watcher is told directly: nothing to hold back if its
    // (raw) handler panics. Otherwise (nobody to tell) the cause is
    // dropped here, outside the borrow. The cause is in `shared` once the
    // slot keeps it too, else still in `cause` (the slot went), or in the
    // slot for the owner (`Death::Owner`).
    let id = key.id;
    match first {
        Death::Owner(fwd) => fwd.fwd(OwnerDown { id }),
        Death::One(w) => match (shared, cause) {
            (Some(cause), _) => deliver(w, Down { id, cause }),
            (None, Some(cause)) => deliver_kept(w, id, cause),
            (None, None) => {}
        },
        Death::Record(ri, first) => {
            if shared.is_some() {
                drain(key, ri, first, shared);
            }
        }
        Death::Gone => {
            // Nobody was told: a cause that holds nothing (the commonest,
            // `Dropped`) is forgotten, skipping its drop code.
            if let Some(Kept::Cause(Cause::Dropped | Cause::Stopped | Cause::Lost)) = cause {
                std::mem::forget(cause);
            }
        }
    }
}

/// Stakker freed the device's actor without ending it: its termination
/// `Ret` was dropped unfired, because the runtime was dropped (or, for a
/// task device, its executor). Nothing can run any more, so nothing is
/// invented: the device never died. Its watchers are dropped unfired (a
/// `Ret` handler sees `None`), its links go, and as long as a handle
/// names it every question gets that one answer: alive, no cause; a new
/// monitor is accepted and dropped unfired, a link, trap or request
/// accepted and changes nothing. A device no longer live is left as it
/// is.
#[cold]
pub(crate) fn unended(key: Key) {
    let found = with(None, |r| {
        let Registry {
            slots,
            live,
            inline,
            unended,
            ..
        } = r;
        let slot = slots
            .get_mut(key.slot as usize)
            .filter(|slot| slot.id == key.id)?;
        let State::Live(first) = &mut slot.state else {
            return None;
        };
        let first = first.take().map(|first| first.watch);
        slot.state = State::Unended;
        *live -= 1;
        *unended += 1;
        #[cfg(feature = "device-spans")]
        r.idents.remove(&slot.actor);
        if first.is_some() {
            *inline -= 1;
        }
        let record = slot.record;
        if slot.refs == 0 && record == NIL {
            slots.remove(key.slot as usize);
        }
        Some((record, first))
    });
    let Some((record, first)) = found else {
        return;
    };
    if record == NIL {
        drop(first);
    } else {
        drain(key, record as usize, first, None);
    }
}

/// A panic unwound out of stakker's termination of the actor with
/// identity `actor` (see [`ident`](super::ident)), which the caller found a zombie: the
/// `Drop` of its state (user code) panicked after stakker made it a
/// zombie and before it fired the termination `Ret`. If that actor is a
/// device still live, the interrupted death completes here with
/// `Cause::Panic` (its watchers are told, its linked watchers cascaded);
/// its termination `Ret`, fired or dropped later, finds it dead and
/// changes nothing. Otherwise the panic is handed back, to be resumed.
///
/// Cost: a scan of the thread's device slots (a panic is rare).
#[cold]
pub(crate) fn died_in_drop(
    actor: usize,
    payload: Box<dyn Any + Send>,
) -> Result<(), Box<dyn Any + Send>> {
    let key = with(None, |r| {
        r.slots
            .iter()
            .find(|(_, slot)| slot.actor == actor && slot.is_live())
            .map(|(i, slot)| Key {
                slot: index(i),
                id: slot.id,
            })
    });
    let Some(key) = key else {
        return Err(payload);
    };
    let cause = Ending(Cause::Panic(crate::guard::panic_message(payload)));
    died(key, Some(StopCause::Failed(Box::new(cause))));
    Ok(())
}

/// The cause of a dead device, for its owner-watcher (told by an
/// [`OwnerDown`]; see [`device::owner`](crate::device::owner)), which is
/// about to drop its handle `key`: a shared copy while another handle or
/// a record can ask for it; else it is moved out and the slot is freed at
/// once, and `key` is detached (its release has nothing left to do).
/// `None` if the device is not dead (or its slot is gone).
pub(crate) fn take_cause(key: &mut Key) -> Option<Kept> {
    let (kept, freed) = with_default(|r| {
        let Some(slot) = r.slot(*key) else {
            return (None, false);
        };
        let alone = slot.refs == 1 && slot.record == NIL;
        let State::Dead(kept) = &mut slot.state else {
            return (None, false);
        };
        if !alone {
            return (kept.as_mut().map(|c| Kept::Cause(c.share())), false);
        }
        let kept = kept.take();
        // Holds nothing now (`Dead(None)`, no record).
        r.slots.remove(key.slot as usize);
        (kept, true)
    });
    if freed {
        key.slot = NIL;
    }
    kept
}

/// What the first step of a death found.
#[derive(Default)]
enum Death {
    /// Nobody to tell (or the device was already dead).
    #[default]
    Gone,
    /// Only the inline watcher to tell.
    One(Watch),
    /// Only the owner to tell; the cause stays in the slot for it.
    Owner(Fwd<OwnerDown>),
    /// A record (index) to drain, after the inline watcher if any.
    Record(usize, Option<Watch>),
}

/// The rest of a death for a device with a record (index `ri`): its links
/// come off the devices it watched, then its watchers are told, `first`
/// (the inline one) first.
///
/// With no `cause` (the device was freed unended), the watchers are
/// dropped unfired instead of told.
fn drain(key: Key, ri: usize, first: Option<Watch>, mut cause: Option<Cause>) {
    // What the borrows hand out, written in place (no large values are
    // returned through the closures).
    let mut control: Option<Weak<dyn Control>> = None;
    let mut watch = first.map(Ready::Watch);
    let mut freed: Option<Kept> = None;
    let mut more = false;
    with((), |r| {
        let Some(rec) = r.records.get_mut(ri) else {
            return;
        };
        rec.draining = true;
        control = rec.control.take();
        let mut watching = std::mem::replace(&mut rec.watching, NIL);
        // This device no longer watches anyone: take its link nodes off
        // the lists of the (live) devices it watched. They hold no user
        // value.
        while watching != NIL {
            let next = r.nodes[watching as usize].wnext;
            r.unhook_owner(watching);
            watching = next;
        }
        if watch.is_none() {
            watch = r.pop_watcher(ri);
        }
        more = r.drain_goes_on(key, ri, &mut freed);
    });
    if freed.is_some() {
        drop(freed.take());
    }
    // Tell the watchers one by one, outside the borrow, taking each from
    // the head of the dead device's list: user code runs between them and
    // may end other devices, which take their own nodes off this list
    // (nothing is added to a dead device's list, and its record stays
    // while it drains). A panic in an unguarded (raw) handler is held
    // until every watcher has had its Down, then resumed.
    let mut panic = None;
    while let Some(w) = watch.take() {
        // The last watcher gets the cause itself, the others a copy.
        let cause = if more { cause.clone() } else { cause.take() };
        let outcome = match cause {
            Some(cause) => {
                let down = Down { id: key.id, cause };
                catch_unwind(AssertUnwindSafe(|| w.tell(down)))
            }
            // Freed unended: nothing can be delivered, and the watcher is
            // dropped unfired (a Ret handler sees None).
            None => catch_unwind(AssertUnwindSafe(|| drop(w))),
        };
        // The first panic is resumed at the end; a later one's payload
        // is dropped here, contained (`drop_payload`).
        match (outcome, &panic) {
            (Ok(()), _) => {}
            (Err(p), None) => panic = Some(p),
            (Err(p), Some(_)) => crate::task::drop_payload(p),
        }
        if !more {
            break;
        }
        more = with(false, |r| {
            watch = r.pop_watcher(ri);
            r.drain_goes_on(key, ri, &mut freed)
        });
        if freed.is_some() {
            drop(freed.take());
        }
    }
    drop(control);
    if let Some(p) = panic {
        resume_unwind(p);
    }
}

impl Registry {
    /// Whether watchers remain on the list of a dead, draining device
    /// (record `ri`). If none remain, the drain is over: the slot and
    /// record are freed if no handle names the device, the freed cause
    /// going to `freed` (to be dropped outside the borrow).
    #[inline]
    fn drain_goes_on(&mut self, key: Key, ri: usize, freed: &mut Option<Kept>) -> bool {
        match self.records.get_mut(ri) {
            Some(record) if record.head != NIL => true,
            Some(record) => {
                record.draining = false;
                *freed = self.free_if_unused(key);
                false
            }
            None => false,
        }
    }
}
