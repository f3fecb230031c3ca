//! OTP supervisors (being written: issue 6).
