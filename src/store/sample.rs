//! The sample organisation as a fixture (`sample_org.sql`): what `dingsync demo` starts from,
//! loaded through the store like any other SQL, so the demo holds none of its own.

use super::{Store, StoreResult};

/// The sample organisation's statements, one a line (`--` lines are comments).
const SAMPLE_ORG: &str = include_str!("sample_org.sql");

impl Store {
    /// Writes the sample organisation (two companies, eight departments of which one a post,
    /// seven users of which one deleted) into JeecgBoot's tables, one statement at a time, in
    /// order. The rows carry no writer marker unless this store is dingsync's own.
    pub async fn load_sample_org(&self) -> StoreResult<()> {
        for statement in SAMPLE_ORG
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with("--"))
        {
            self.execute(statement).await?;
        }
        Ok(())
    }
}
