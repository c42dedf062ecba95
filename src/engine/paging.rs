//! Listings cut into pages, the way every AWS listing is: sorted by a name, a page size within
//! the operation's limits, and an opaque token naming where the next page starts. KMS calls the
//! token a marker, Secrets Manager and SSM a NextToken; the rules are the same.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A page of a listing.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts, when there is one.
    pub next_token: Option<String>,
}

/// Why a page cannot be cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    #[error("Limit must be between 1 and {max}.")]
    Limit { max: i64 },
    #[error("The pagination token is invalid.")]
    Token,
}

/// Page sizes an operation allows.
#[derive(Clone, Copy, Debug)]
pub struct PageLimits {
    pub max: i64,
    pub default: i64,
}

/// The name a page token says the next page starts after, checking the page size too; for a
/// listing that reads its items in name order and stops once it has a page and one more.
pub fn resume_after(
    limit: Option<i64>,
    token: Option<&str>,
    limits: PageLimits,
) -> Result<(usize, Option<String>), PagingError> {
    let limit = limit.unwrap_or(limits.default);
    if !(1..=limits.max).contains(&limit) {
        return Err(PagingError::Limit { max: limits.max });
    }
    let after = token
        .map(|token| {
            STANDARD
                .decode(token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or(PagingError::Token)
        })
        .transpose()?;
    Ok((usize::try_from(limit).unwrap_or(1), after))
}

/// Cuts `items`, named by their first member, into the page after `token` (the last name of
/// the previous page, as this function encoded it).
pub fn paginate<T>(
    mut items: Vec<(String, T)>,
    limit: Option<i64>,
    token: Option<&str>,
    limits: PageLimits,
) -> Result<Page<T>, PagingError> {
    let limit = limit.unwrap_or(limits.default);
    if !(1..=limits.max).contains(&limit) {
        return Err(PagingError::Limit { max: limits.max });
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let start = match token {
        None => 0,
        Some(token) => {
            let after = STANDARD
                .decode(token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or(PagingError::Token)?;
            items.partition_point(|(name, _)| name.as_str() <= after.as_str())
        }
    };
    let limit = usize::try_from(limit).unwrap_or(1);
    let end = start.saturating_add(limit).min(items.len());
    let next_token = (end < items.len())
        .then(|| {
            items
                .get(end.saturating_sub(1))
                .map(|(name, _)| STANDARD.encode(name))
        })
        .flatten();
    let items = items
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(|(_, item)| item)
        .collect();
    Ok(Page { items, next_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PageLimits = PageLimits { max: 3, default: 2 };

    fn names(count: usize) -> Vec<(String, usize)> {
        (0..count).rev().map(|n| (format!("n{n:02}"), n)).collect()
    }

    #[test]
    fn pages_follow_each_other_in_name_order() {
        let first = paginate(names(5), None, None, LIMITS).unwrap();
        assert_eq!(first.items, [0, 1]);
        let second = paginate(names(5), Some(3), first.next_token.as_deref(), LIMITS).unwrap();
        assert_eq!(second.items, [2, 3, 4]);
        assert!(second.next_token.is_none());
    }

    #[test]
    fn bad_limits_and_tokens_are_refused() {
        assert_eq!(
            paginate(names(1), Some(0), None, LIMITS).unwrap_err(),
            PagingError::Limit { max: 3 }
        );
        assert_eq!(
            paginate(names(1), Some(4), None, LIMITS).unwrap_err(),
            PagingError::Limit { max: 3 }
        );
        assert_eq!(
            paginate(names(1), None, Some("@@"), LIMITS).unwrap_err(),
            PagingError::Token
        );
    }
}
