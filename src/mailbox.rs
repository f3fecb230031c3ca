//! Reliable bounded mailboxes (being written: issue 6).
