//! Process exit codes (sysexits.h), shared by every subcommand and by systemd's
//! `RestartPreventExitStatus=78`.

/// Done.
pub const OK: u8 = 0;
/// Bad command-line usage.
pub const USAGE: u8 = 64;
/// Bad input data: some entities could not be synced.
pub const DATA_ERR: u8 = 65;
/// A dependency (database, DingTalk) was unavailable at start.
pub const UNAVAILABLE: u8 = 69;
/// Temporary failure: try again later (another run of the tenant held its run lease).
pub const TEMPFAIL: u8 = 75;
/// Bad configuration: systemd does not restart on it.
pub const CONFIG: u8 = 78;
