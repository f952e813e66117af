//! Deleting in batches, each its own write, so that nothing waits long
//! behind a large delete.

/// Runs `delete_batch` until it deletes fewer than `batch` rows; returns
/// how many it deleted in all.
pub(crate) async fn delete_in_batches<F, Fut, E>(batch: u32, mut delete_batch: F) -> Result<u64, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
{
    let mut deleted = 0;
    loop {
        let gone = delete_batch().await?;
        deleted += gone;
        if gone < u64::from(batch) {
            return Ok(deleted);
        }
    }
}
