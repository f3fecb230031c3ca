//! The cluster (feature `cluster`): many runtimes — one per core, across
//! machines — joined into one system.
//!
//! What is here so far, built on proven parts rather than a home-made
//! protocol:
//!
//! - [`NodeId`] and [`Pid`]: a node is its address *and* its incarnation,
//!   so a restarted node is a new node and can never be confused with the
//!   old one (the higher incarnation wins); a `Pid` names a device on a
//!   node, compact and `Copy`.
//! - [`wire`]: the frames nodes exchange, in `postcard` (a stable,
//!   documented serde format) behind a 4-byte length prefix, decoded
//!   incrementally with a maximum frame size: bad input is a typed
//!   [`WireError`], never a panic and never an allocation past the limit.
//! - [`membership`]: SWIM membership and failure detection from `foca`,
//!   driven by stakker timers (so it runs on virtual time in tests), over
//!   a [`Transport`] seam with an in-memory
//!   network ([`MemNet`]) for tests.
//!
//! - [`Node`]: a node's membership, remote sends to registered actors
//!   (the same call for a local and a remote target), typed addresses
//!   ([`Ref<M>`](Ref)) and names found with `lookup` on any node, dead
//!   letters, and remote monitors that end with the device's real cause,
//!   or `Cause::Lost` when its node is lost.
//!
//! - [`Session`]: an authenticated, encrypted session between two nodes,
//!   without I/O: Noise `XXpsk2` (`snow`) keyed by the cluster's
//!   [`Secret`], the version checked after authentication, frames cut
//!   into Noise messages. With per-node keys ([`keys`]: an [`Identity`]
//!   per node, [`Pins`] of the others' public keys by address), a node
//!   admits only peers that prove the key pinned for their address.
//!
//! - [`tcp::TcpTransport`]: the node transport over stakplane's TCP: one
//!   Noise session per peer, connected on first use; per-peer control and
//!   data queues (bounded, control first) that outlive connections and are
//!   flushed once per turn, frames encrypted together; reconnects after a
//!   doubling backoff (an unreachable peer is not a down one); link choice
//!   for simultaneous connects after authentication (rules 130–136 in
//!   [`tcp`]).
//!
//! - [`Node::builder`] starts a node over TCP:
//!   `Node::builder().listen(addr).secret(..).seeds(..).start(core)`
//!   listens, starts the node (a device) and joins; its incarnation
//!   defaults to the wall clock, so a restarted node is new.
//!
//! - [`Node::ask`]: typed request and reply, the same call for a local
//!   and a remote target, answered exactly once.
//!
//! - [`Node::link`], [`Node::trap`], [`Node::demonitor`]: remote links
//!   with the local link semantics (Monitor, Notify, Peer; trap or die of
//!   a fault), over the same watches as remote monitors.
//!
//! - [`transport`]: the seam between a node and the network, with
//!   backpressure ([`Full`], [`Node::try_send`],
//!   [`Node::send_when_room`]) and the links' state for
//!   [`Node::status`]; [`MemNet`] runs nodes in one thread.
//!
//! - [`RemoteActor`]: declarative remote actors, a trait with serde
//!   message, request and reply types, served by a node
//!   ([`Node::serve`], [`Node::serve_child`] for a supervised child whose
//!   address follows restarts) and addressed by a typed [`RemoteRef`].
//!
//! - Credits ([`CREDITED`]): a served child with a bounded mailbox
//!   grants senders on other nodes only what its free room allows.
//!
//! - [`sim`]: a deterministic simulator (nodes, clock and network in one
//!   thread, one seed one schedule, faults injected) on which the
//!   cluster's claims are properties checked over thousands of seeds.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **110. A frame is decoded only within the size limit, and bad bytes are
//! a typed error**: a length prefix above the limit is refused
//! ([`WireError::TooLarge`]) before anything is allocated for it; bytes
//! that do not decode are [`WireError::Malformed`]; a body is exactly one
//! frame: one with bytes behind its frame (junk, or a second frame inside
//! one length prefix) is [`WireError::Trailing`], and the frame in front
//! is not taken either; a frame split across
//! reads at any byte boundary decodes the same as whole; no input makes
//! the decoder panic.
//!
//! **111. Membership is foca's SWIM on stakker time**: nodes that announce
//! to a seed all learn of each other (`MemberEvent::Up`); a node that
//! stops answering is declared down (`MemberEvent::Down`) after the
//! probe period and the suspicion timeout, by every other node; a node
//! that comes back with a higher incarnation is a new member, and the old
//! incarnation stays down: it is never told `Up` again, even after a
//! partition longer than foca's default memory of down members (24 hours;
//! [`MembershipConfig::lan`](membership::MembershipConfig::lan) keeps
//! them for good, and the partitioned node comes back as a newer
//! incarnation). A suspicion the member refuted never takes it
//! down (foca 2.0.0 alone would tell it that it is down when the
//! suspicion's timer fires, and it would rejoin under a new incarnation:
//! the simulator found it; the membership drops such timers).
//!
//! **112. `send` behaves the same for a local and a remote target**: a
//! message to an actor registered on this node is handed over as it is
//! (no serialisation); to another node it is serialised into one frame;
//! either way the registered actor receives it. Messages from one node to
//! one target arrive in send order. A wrong message type is refused
//! ([`SendError::WrongType`]); a node that is not a member is refused
//! ([`SendError::NodeDown`]).
//!
//! **112a. An address made on a node takes a direct route there, and
//! only there**: a [`Ref`] or [`RemoteRef`] made by a node
//! ([`Node::register_named`], [`Node::serve`]) carries the slot of its
//! registration and the token of that node instance; that node alone
//! takes the route, only while the slot holds the address's device, and
//! only in the incarnation that made it (a node that rejoins as a new
//! incarnation takes a new token: an address made before names a node
//! that is down). A [`Ref`] made by [`Node::register_named`] (or found
//! by [`Node::lookup`] on its own node) also holds a weak shortcut to the
//! registration's handler, taken on the same terms and only while that
//! registration stands: a registration replaced (even for the same
//! device), removed or whose device died is never reached through it,
//! and the send goes the long way to what stands now; an address kept
//! after its registration ended does not keep the handler alive. The
//! route and the shortcut are never sent, compared or hashed: an address
//! received from the network, or made with `Ref::new`, is looked up by its
//! `Pid`, with the same result.
//!
//! **113. No message is lost in silence, and a bad packet costs one
//! packet**: a message for an unknown target (or that does not decode)
//! goes to the target node's dead-letter `Fwd` and is counted; a packet
//! that is not one whole frame is dropped, counted and logged, and the
//! node goes on.
//!
//! **113a. A registration ends with its device**: a registration made
//! with a device ([`Node::register_device`], [`Node::register_named`],
//! [`Node::serve`]; a served child's address with its supervisor) is
//! watched by the node, once per registration (its end, by
//! [`Node::unregister`] or a replacement, cancels the watch). From the
//! moment the device dies, a message to it is refused
//! ([`SendError::UnknownTarget`]) or, from another node, dead-lettered
//! and counted, and an ask gets [`AskError::NoTarget`],
//! instead of reaching a dead actor in silence; then the node removes the
//! registration, the names given to it, its ask server and its credit
//! grants (a sender waiting for credit is granted without a bound, never
//! stuck), and a lookup of the name finds nothing. A device already dead
//! is not registered, nor named, nor served. A bare registration
//! ([`Node::register`]) lasts until [`Node::unregister`]. Messages queued
//! for the device before it died go with it, as a mailbox's do.
//! [`NodeStatus::registered`] counts the registrations.
//!
//! **113b. A frame speaks only for the peer it came from**: a transport
//! hands each packet to its node with the address of the peer it came
//! from ([`Packet`]: over TCP, the address that peer authenticated with
//! in its handshake; the side that connected refuses a peer that
//! authenticates as a node at another address than the one dialled,
//! with [`ConnError::WrongPeer`](tcp::ConnError::WrongPeer)). A frame
//! that names a node at another address as its sender (its `from`, or
//! the source in a gossip message's header) is dropped, counted in
//! [`NodeStats::forged_frames`] (a membership on its own counts it in
//! `refused`) and logged; the node and the session go on. An answer to
//! a lookup or an ask is taken only from the node asked, or a later
//! incarnation of it (one that rejoined answers in its new name); one
//! from another node is a late answer ([`NodeStats::late_answers`]),
//! and a `Down` from another node than the watched device's is a bad
//! frame. The check is by address: a session may name any incarnation
//! at its own address, and the state a node keeps for another's
//! incarnations is bounded per address (rules 122a and 127). What this
//! rule gives is that no session speaks for a node at another address
//! than the one it authenticated as. With the cluster's secret alone, a
//! node that holds it can authenticate as any address; to a node that
//! pins keys (rule 116a), only as its own (the guarantee holds
//! cluster-wide when every node has pins).
//!
//! **115. A remote device's death reaches its watcher once, with its real
//! cause**: a watch ([`Node::monitor`]) of a device registered with
//! [`Node::register_device`] ends with one [`RemoteDown`] whose cause has
//! the device's kind (normal stop or fault) and its text; a watch of an
//! id nobody registered ends at once, with an error cause.
//!
//! **115a. A full queue delays a death notice, a reply or a watch
//! request, never drops it**: a notice and a reply are data (a notice
//! follows the dead device's earlier sends); when the watching or asking
//! node's queue has no room they wait for room behind what already
//! waits, as [`Node::send_when_room`] does. A control frame other than
//! gossip (a watch or link request or its cancellation, a lookup, a
//! credit ask or grant) that its queue refuses waits the same way, in
//! order, and then goes as data, as do the node's later control frames
//! to that peer (none overtakes it: an `Unlink` never arrives before its
//! `Link`); only gossip is dropped (membership copes with a lost
//! packet). A reply over the frame limit is answered as
//! [`AskError::TooLarge`]. The one bound: a node that lets
//! [`HELD_FOR_A_NODE`] answers to its requests wait for room here (it
//! reads nothing: its queue is full and as many answers wait behind it;
//! what this node sends it of its own accord does not count) has its
//! requests that want an answer (an ask, a lookup, a watch, a link)
//! refused until it has room again: each is dropped, counted in
//! [`NodeStats::refused_requests`], and the first of each such spell
//! logged as a `warn` event. Its ask or lookup then times out. A refused
//! watch or link is not lost: when the spell ends (room to that node
//! again, with fewer than the bound of answers left waiting), this node
//! sends it a [`Frame::AskAgain`], and it asks again every watch and
//! link it holds of this node's devices, each the same watch here
//! (deduplicated by its tag or its pair; a watch whose device died
//! meanwhile gets its one notice, with the cause as for any watch asked
//! again after a reconnect). It asks again at once or, if its own frames
//! to this node wait for room, once they have all gone, however many
//! such frames came. Credit
//! asks are still answered (refused, one would leave the asker's
//! credited sends waiting), but a grant that waits for room is replaced
//! by a later grant for the same target (a grant is a limit on the
//! messages sent in all): a node that asks over and over makes this one
//! hold one grant per target, not one per ask.
//!
//! **116. Only a peer with the cluster's secret and the same wire version
//! gets a session**, on either side: a wrong secret, garbage or tampered
//! bytes end the session with [`SessionError::Noise`] on the side that
//! detects it (the side that connects, for a peer that accepted without
//! the secret; the side that accepts, for a client without it that goes
//! on), and the side that accepts, left mid-handshake by a client without
//! it, with [`SessionError::Unfinished`] (a client that closes before it
//! sends anything is no error);
//! a payload in the first message, which is in clear, with
//! [`SessionError::Unauthenticated`]; another version with
//! [`SessionError::Version`] (checked after authentication); a failed
//! session reads and sends nothing more; no input panics (10,000 real
//! handshake messages spoiled per test run: flipped, cut, extended,
//! replayed from another handshake). Frames of any
//! size up to the limit go through, in order, both ways.
//!
//! **116a. With pinned keys, a peer proves the address it names**: a
//! side given [`Pins`] ([`Credentials::pins`], [`NodeBuilder::pins`])
//! completes a session only with a peer that proves, in the handshake,
//! the private key of a [`PublicKey`] pinned for the address of the
//! [`NodeId`] its hello names (its [`Identity`]). A peer that names an
//! address with no pin is refused with [`SessionError::Unpinned`], one
//! that proves another key with [`SessionError::WrongKey`]; either side
//! checks the other (the side that connects before it sends its own
//! hello), and over TCP either is bad input (rule 131). A key of low
//! order, which proves nothing, cannot be pinned ([`KeyError::LowOrder`]).
//! Pins given to a running node ([`Node::set_pins`]) hold from then on,
//! for links up too: each link whose peer proved a key they refuse is
//! closed at once, nothing more read from it, with the same error. (A
//! revoked node leaves the membership once every node refuses it: one
//! that another node still admits is vouched for there.)
//! Without pins a side admits any peer with the secret (rule 116), which
//! is what the cluster's secret alone gives: a holder of it can name any
//! address.
//!
//! **117. A name is found the same way on every node, and every lookup is
//! answered exactly once**: [`Node::lookup`] gives the same [`Ref`] for a
//! name on this node (at once) and on another (when it answers); an
//! unknown name is [`LookupError::NotFound`], a device taking another
//! message type [`LookupError::WrongType`], a node that is not a member
//! or is lost before it answers [`LookupError::NodeDown`], this node
//! rejoining as a new incarnation meanwhile [`LookupError::Rejoined`]
//! (naming the old one), no answer within the ask timeout
//! [`LookupError::Timeout`] (rule 119a).
//!
//! **118. Over TCP, nodes with the cluster's secret join and exchange
//! messages, and a node without it never joins**: the transport opens one
//! authenticated session per peer; a wrong secret is refused (counted in
//! [`tcp::TcpStats::failed`]) and neither side ever sees the other as a
//! member.
//!
//! **119. An ask is answered exactly once, the same way for a local and a
//! remote target**: [`Node::ask`] hands a request to a device registered
//! with [`Node::register_ask`] (as it is on this node, serialised on
//! another) and answers its reply; a dropped reply is
//! [`AskError::Dropped`], an id that takes no asks [`AskError::NoTarget`],
//! a node that is not a member or is lost before it replies
//! [`AskError::NodeDown`], this node rejoining as a new incarnation
//! before the reply came [`AskError::Rejoined`] (naming the old one: the
//! peers that declared it down answer it no more, and a reply still on
//! its way is dropped). A remote ask may also end with
//! [`AskError::Timeout`] (rule 119a); an ask of a device on this node
//! cannot be lost and has no timeout.
//!
//! **119a. An ask or a lookup never waits for ever**: one that gets no
//! answer from the other node within the node's ask timeout
//! ([`Node::set_ask_timeout`], [`DEFAULT_ASK_TIMEOUT`] 30 s; the
//! builder's `ask_timeout`) ends with [`AskError::Timeout`] or
//! [`LookupError::Timeout`], once, never early and at most a quarter of
//! the timeout late (one sweep every quarter, only while some wait,
//! however often the timeout is changed or an ask made in one turn; a
//! changed timeout starts the wait of those waiting afresh), counted in
//! [`NodeStats::timed_out`]. That covers a request or an answer lost in
//! flight with a broken connection between two nodes that stay up (the
//! one loss a rebuilt link does not repair: a request is not sent twice,
//! as it may have been handled). An answer that comes after its ask or
//! lookup ended is dropped and counted ([`NodeStats::late_answers`]). An
//! ask of a device on this node is handed over at once and has no
//! timeout (nothing carries it that can lose it).
//!
//! **114. A lost node reaches its watchers exactly once, as `Cause::Lost`**:
//! when membership declares a node incarnation down, every watcher of a
//! device on it ([`Node::monitor`]) gets exactly one [`RemoteDown`] with
//! `Cause::Lost`; a watcher that comes later is told at once; frames from
//! that incarnation are dropped and counted from then on, and none is sent
//! to it (an unlink or a late notice sends nothing: over TCP a frame would
//! connect to its address again). A link that incarnation asks for (it
//! sent it before it learned it was down) is such a later watcher: the
//! device of this node it names is told `Lost` at once (it traps it, or
//! dies of it), once however often it is asked; that incarnation clears
//! its links when it rejoins, counting on it.
//!
//! **114a. A restarted node is a new node: nothing meant for the one
//! before reaches it**: every frame between nodes names the incarnation
//! it is for, and a node drops a frame for any incarnation it never was
//! (one that ran at its address before it started), counted in
//! [`NodeStats::stale_frames`]; a message among them is dead-lettered
//! there, as for an unknown target ([`SendError::NodeDown`] of the
//! incarnation it was sent to). A node may restart and come back before
//! the others declare the old one down, and its device ids and tags
//! start afresh: without this, a message, a link or a watch meant for the
//! old one would reach a device of the new one with the same id, and a
//! late reply or death notice would end the new node's ask or watch that
//! has the same tag. The sender's watches of the old incarnation end as
//! rule 114 says, when it is declared down. A node that rejoined is still
//! the same node: it takes what is written to its earlier incarnations
//! (a peer may not have heard of the rejoin yet), but a credit grant or
//! sync, which holds for the incarnation it names only.
//!
//! **120. A remote link behaves as a local one**: [`Node::link`] with
//! `Monitor` (this node's device watches the other), `Notify` (the other
//! watches it) or `Peer` (both); a watching device that traps
//! ([`Node::trap`]) gets exactly one [`RemoteDown`] with the watched
//! device's cause; one that does not is killed with [`RemoteFault`] (its
//! cause `Killed`, naming the remote device and its cause) on a fault —
//! any cause but a normal stop, `Cause::Lost` included — and left alone
//! on a normal stop. One notice per pair and direction, however often it
//! was linked; a dead local device or a device and itself are refused
//! ([`LinkError`](crate::LinkError)); a watched device that is unknown
//! or dead ends the link at once with that cause. A link asked for by a
//! node this one does not know as a member yet (its membership news is
//! on the way) is watched like any other, not ended as `NodeDown`; if a
//! newer incarnation of that node comes up first, the watch ends with
//! `Cause::Lost`, as for a node declared down.
//!
//! **121. Unlink and demonitor stop notification, and a dead watcher
//! takes its remote watches with it**: after [`Node::unlink`] or a
//! [`Node::demonitor`] that returns `true`, nothing is delivered; a
//! demonitor after the end returns `false`; when a linked device dies,
//! its watches are cancelled on the watched device's node too. An unlink
//! on the watching side of a link the other node made (`Notify` there,
//! undone with `Monitor` here) makes that node forget it
//! ([`Frame::Unwatch`]): it is not asked for again when the connection
//! comes back (rule 128) or a spell of refusals ends (rule 115a). An
//! unlink holds even when its frame is lost with a connection that
//! breaks (its device may die meanwhile): an `Unlink` is sent again each
//! time the connection comes back, ahead of everything queued meanwhile
//! (such as that device's death notice), and a `Link` asked again for a pair
//! unlinked on the watching side is refused there, with its `Unwatch`
//! sent again (counted as an answer for rule 115a's bound), also while
//! the asking node is being declared down. Each link carries the epoch
//! its node made it at, so an unlink said again never undoes a link made
//! after it, nor one the watching node made itself. The watching node
//! answers each `Unlink` ([`Frame::Unlinked`]; an answer to an `Unlink`
//! or a `Demonitor` goes only if there is room at once, and one dropped
//! is made again when its cancel is said again, so a node that reads
//! nothing makes the other hold none of them). A node remembers its
//! last 4,096 such unlinks, each until it is answered, the watching
//! node is declared down, or this node rejoins. A cancelled watch holds
//! the same way (a demonitor, an unlink, a dead watching device): a
//! `Demonitor` lost with a connection that breaks is sent again each
//! time the connection comes back, ahead of the watches asked again
//! (the watched node ignores a watch it does not hold), so that node
//! does not keep the watch, counted toward rule 122a's bound, for as
//! long as its device lives. The watched node answers each `Demonitor`
//! (a `Down` of cause [`WireCause::Cancelled`], which no watcher sees).
//! A node remembers its last 4,096 cancelled watches, each until a
//! `Down` for it comes (that answer, or the death notice), its node is
//! declared down, or this node rejoins
//! ([`NodeStatus::cancels_unanswered`] counts them); past that, the
//! oldest one's lost `Demonitor` is not said again, and that watch is held until its device dies or one of the
//! nodes is lost. A watch of
//! a device of this node, made before the node rejoined as a new
//! incarnation, is cancelled whole (the watch held for it goes too).
//!
//! **128. A watch survives a broken connection**: frames in flight when
//! a connection breaks may be lost (a peer that is unreachable is not
//! down), so each time a session with a node comes up again every watch
//! of its devices that has not ended is asked again, and so is every
//! `Notify` link to its devices; the watched node takes a watch it holds
//! as the same one, and answers one whose device is dead at once with
//! the recorded cause. A watch request or a `Down` lost in flight, or a
//! lost `Link`, therefore still ends in exactly one notice with the real
//! cause. Messages lost in flight stay lost (at most once). What was
//! asked or said again (rule 121's `Unlink`s and `Demonitor`s too) the
//! last time the
//! session came up and still waits for room to that node is dropped
//! when it comes up once more, as a newer copy is sent then: a session
//! that comes back over and over while that node reads nothing makes
//! this one hold one copy, not one per time.
//!
//! **122. No queue without a bound, and nothing lost in silence**: when
//! a peer's queue is full, [`Node::try_send`] gives the message back
//! ([`TrySendError::Full`]) and [`Node::send`] refuses it
//! ([`SendError::Full`]); [`Node::send_when_room`] waits, in send order
//! (a later `try_send` does not overtake waiting sends), and answers
//! each exactly once: sent, or [`SendError::NodeDown`] if the node is
//! declared down while it waits, or [`SendError::Rejoined`] if this node
//! rejoins as a new incarnation meanwhile (the message was encoded in the
//! old one's name, which every peer now drops).
//!
//! **122a. Another node holds a bounded number of watches here**: the
//! node at an address (whatever incarnation its frames name) may have at
//! most [`WATCHES_PER_NODE`] watches held on this node's devices
//! ([`Node::set_watch_limit`] changes the bound), and as many links it
//! made by which devices of this node watch its own. A new one past the
//! bound is refused: a watch ends at once for its watcher, with
//! [`WatchError::TooMany`] as the error of its cause (a fault: a linked
//! device that does not trap dies of it, as of a link that cannot be
//! held); a link is undone on the node that made it, which forgets it,
//! and the device of this node that would have watched through it is
//! told, once, with [`WatchError::TooManyLinks`] (its trap handler gets
//! it; one that does not trap dies of it, as above). For a `Peer` link,
//! the half by which this node's device would watch is refused; the
//! other half is a watch, counted as one. Each refusal
//! is counted in [`NodeStats::refused_watches`], and the first since that
//! node was last admitted one is logged as a `warn` event. A refusal
//! holds: the same watch or link asked again (after a reconnect, or by
//! an incarnation declared down since, or after this node rejoined) is
//! refused again, in silence, never admitted behind the watcher's back
//! (a node remembers its last 4,096 refused watches, and each device its
//! last 4,096 refused links). Never refused: a watch or link asked again
//! that is held already, a watch of a dead device (it gets its cause),
//! and the watches of this node itself. Those a node has stay when the
//! bound is lowered; watches asked again in the name of a rejoined
//! incarnation are new ones here.
//!
//! **123. A node that leaves is down for the others, and they for it**:
//! after [`Node::leave`] the others see `MemberEvent::Down` and their
//! watchers of its devices get `Cause::Lost`; its own watchers of their
//! devices get `Cause::Lost` at once.
//!
//! **124. Status reports each member with its state, and each link**:
//! [`Node::status`] lists every other member known, up, suspect or down,
//! with its incarnation, and the transport's links; a node cut off is
//! suspected first, then declared down.
//!
//! **125. A restarted node is a new member, and the old `Pid`s stay
//! dead**: a node back on the same address with a higher incarnation
//! joins as a new member, and the old incarnation is declared down even
//! if the restart was faster than the suspicion timeout (a node under a
//! supervisor restarts so); sends to the old incarnation's devices are
//! refused ([`SendError::NodeDown`]) and watches of them end at once with
//! `Cause::Lost`.
//!
//! **126. A remote actor is reached the same way wherever it lives, and
//! a served child keeps its address across restarts**: [`Node::tell`] and
//! [`Node::request`] on a [`RemoteRef`] give the same results from its
//! own node and from another; its handler is told the sender
//! ([`Node::send_from`] names a device); [`Node::lookup_actor`] refuses
//! another actor type ([`LookupError::WrongType`]); a request the actor
//! does not answer is [`AskError::Dropped`]; the address of a child
//! served with [`Node::serve_child`] reaches each new incarnation after
//! a restart, and a child that no longer runs refuses messages
//! ([`SendError::NotRunning`]).
//!
//! **127. A remote sender never overflows a mailbox**: a child served
//! with a holding spec is a credited target (its address carries
//! [`CREDITED`]); a sender on another node sends it only what its node
//! granted, never more in all than the mailbox's free room; without
//! credit [`Node::try_send`] gives the message back (`Full`) and
//! [`Node::send_when_room`] waits for the grant, in order; as the child
//! handles messages its node grants again, so a burst of any size
//! arrives whole, in order, with the mailbox never over its bound and
//! nothing refused. A credited message waits for credit first, then for
//! room in the transport's queue with its credit taken: it never goes
//! without credit, and credit held is never left unspent while sends
//! wait. No sender is left waiting for a grant that cannot come: when the
//! target's registration ends, every sender waiting for its credit or
//! holding some is granted without a bound (its sends go and are
//! refused there, counted), and a credited message refused on arrival
//! frees its room at once. A frame lost in flight with a broken
//! connection strands nothing: a grant is a cumulative limit, given again
//! when asked again, and when the link comes back the sender tells, as
//! data behind what it sent, how many it has sent; those not arrived by
//! then were lost, and their room is given back ([`Frame::CreditSync`]).
//! Credit frames name the incarnation they are for: one meant for a node
//! before it rejoined is dropped. A grant for a target this node holds no
//! account with (it never asked) opens none: it is dropped and counted
//! ([`NodeStats::unasked_grants`]). A credited target keeps accounts for
//! one incarnation per sender address, the newest named: a newer one's
//! ask replaces an older one's account (that incarnation is gone), an
//! older one's is stale and changes nothing, and a sync or a message
//! opens no account. [`NodeStatus::credit_accounts`] says how many
//! accounts a node holds. A node that rejoins refuses the sends
//! that waited for credit or room in its old name
//! ([`SendError::Rejoined`], naming the old incarnation), as every peer
//! would drop them, and starts its credit afresh both ways: a message it
//! sent in its old name and handled later opens no account.
//!
//! **140. One seed gives one schedule**: a [`sim::Sim`] run from the same
//! seed sends the same packets, between the same nodes, at the same
//! virtual times, with the same fates; another seed, another schedule.
//!
//! **141. The cluster's claims hold on every seed**: over 1,000 seeds per
//! test run of three nodes, each with a clock up to 5 % fast or slow,
//! with messages, remote monitors, lost, duplicated and reordered gossip,
//! partitions (one way and both) and heals, connection blips, a device
//! killed and a node crashed: each remote watch ends at most once, and
//! exactly once when its device died or its node crashed; `Lost` reaches
//! a watcher only after its node declared that node down; no message is
//! delivered from an incarnation after the receiving node declared it
//! down, nor to a device after its death (by the network or through a
//! typed address's shortcut), nor through an address made before its
//! node rejoined; messages between two nodes (and from a node to its own
//! device) arrive in send order; a message
//! `send` accepted on a link that did not break afterwards (no
//! partition, blip or crash, neither end declared down or rejoined) is
//! delivered, or its target node dead-letters it; and 60 s after the
//! last fault (the last heal, the last gossip lost) every node that did
//! not crash sees every other one, in its current incarnation. Over 200
//! seeds, bursts to a credited child that crashes and restarts, through
//! a network that holds its frames now and then: every send is told once
//! and succeeds, every message arrives, the mailbox never goes over its
//! bound, and no message comes without credit. Over 200 seeds, asks
//! (of a server that answers at once, and of one that answers late,
//! drops the reply or never answers) and lookups between the nodes,
//! through the same faults and the rejoins that follow: each is answered
//! exactly once (rule 119), a reply is the one its server gave to that
//! request, and a timeout comes never early and at most a quarter of the
//! timeout late (rule 119a). Over 200 seeds, devices linked across the
//! nodes (monitor, notify and peer; some trap, some do not) through the
//! same faults, with devices killed: a trapping device hears of each
//! device it watches at most once, and exactly once when that device
//! died or its node crashed; one that does not trap is killed in a
//! cascade then (rule 120); a `Lost` comes only after its node declared
//! the other down; nothing comes after an unlink, or after a demonitor
//! of a node's monitor that answered `true` (rule 121). Over 200 seeds, a
//! node that crashes and starts again at its address as a new
//! incarnation, before or after the others declared the old one down,
//! while messages still go to the old one's addresses (its own, and its
//! name with the new one's device ids): a device only ever gets what was
//! sent to its own node's incarnations (the one it started as, or one it
//! rejoined as), in send order (rule 114a); every monitor
//! ends at most once, naming the device it watched, with a kill's cause
//! only for that device's kill; and once the faults are over every node
//! sees the new incarnation and none of the old, refuses the old
//! addresses (`NodeDown`), delivers to the new ones, finds each device by
//! name and hears each one's death once. No node compares its
//! clock with another's (the wire carries no time), so clocks that
//! disagree by any offset change nothing; their rates are what the
//! drift tests.
//!
//! **142. An isolated node finds the cluster again**: a node whose
//! announce was lost, that sees no member left, or that rejoined under a
//! new incarnation announces itself again, once per probe period, to
//! every address it knew, until membership is active; membership events
//! are told before the `Lost` notices that follow from them.
//!
//! **143. The link choice and the credit protocol hold in every
//! interleaving**: model-checked exhaustively with `stateright` — two
//! nodes connecting at any time, handshakes completing in any order:
//! no frame goes on a link the other end closed, two ends that send use
//! the same link, and at the end one link is confirmed at both ends (the
//! lower node's if both connected); one sender and a mailbox of two with
//! a consumer at any pace, over a connection that breaks up to twice
//! (losing any prefix of the frames in flight each way): the mailbox is
//! never over its bound, credit granted never exceeds the room, no
//! message comes without credit, and nothing is stuck (every message is
//! sent, and handled or lost with a connection).
//!
//! **144. A failing seed replays from the line it printed**: a property
//! that fails prints its seed and the command that runs it alone
//! ([`sim::SEED_VAR`]); that run, in another process, fails with the same
//! words and the same trace ([`sim::Trace`]: each packet's time, ends,
//! frame kind and fate), byte for byte. Nothing in a node's schedule
//! depends on a hash seed or on the value of a device id (ids are unique
//! in the whole process, so they differ from run to run; the maps a node
//! walks to send are ordered by tag, node and id order).

mod builder;
mod id;
pub mod keys;
pub mod membership;
pub mod node;
pub mod session;
pub mod sim;
pub mod tcp;
pub mod transport;
pub mod wire;

pub use builder::{NodeBuilder, NodeError};
pub use id::{NodeId, Pid, Ref, RemoteRef};
pub use keys::{Credentials, Identity, KeyError, Pins, PublicKey};
pub use node::{
    AskError, DeadLetter, LookupError, Member, MemberState, Node, NodeStats, NodeStatus,
    RemoteActor, RemoteDown, RemoteFault, RemoteMonitor, SendError, TrySendError, WatchError,
    CREDITED, DEFAULT_ASK_TIMEOUT, HELD_FOR_A_NODE, WATCHES_PER_NODE,
};
pub use session::{Secret, Session, SessionError};
pub use transport::{Full, LinkState, LinkStatus, MemNet, Packet, Transport};
pub use wire::{Frame, FrameReader, WireCause, WireError, WireNoReply, MAX_FRAME, WIRE_VERSION};
