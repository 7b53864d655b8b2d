//! Hashes of a membership table, for push-pull by digest (the crate docs explain the
//! exchange): one 64-bit hash of the whole table (the *root*) and the same hash split
//! into buckets of members.
//!
//! The hash of a table is the wrapping sum of the hashes of its rows, so the root is the
//! sum of the bucket hashes, the order of the rows does not matter, and two tables have
//! the same hash exactly when (up to a 2^-64 accident) they hold the same rows. A row's
//! hash covers everything push-pull repairs — member, incarnation, state and address —
//! and nothing it does not (when the state changed on this node's clock).
//!
//! A member's bucket is the top bits of a mixed hash of its id, so buckets stay even
//! whatever ids a deployment uses. The bucket count is a power of two chosen by the
//! member that sends the bucket hashes: about `√n`, so that the hashes (`8·√n` bytes)
//! and the rows of one differing bucket (`≈ √n` rows) cost about the same.

use kvlab_types::NodeId;

use crate::{Member, MemberState};

/// The most buckets a table is split into (a power of two). `√MAX_MEMBERS`: a full table
/// still gets buckets of ~256 rows. Anything above is refused on receipt.
pub const MAX_DIGEST_BUCKETS: usize = 256;

/// splitmix64's finaliser: a bijective mix of all 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn state_byte(s: MemberState) -> u8 {
    match s {
        MemberState::Alive => 1,
        MemberState::Suspect => 2,
        MemberState::Dead => 3,
        MemberState::Left => 4,
    }
}

/// The hash of one row: member, incarnation, state and address (length-prefixed, so no
/// two rows encode alike). The same on every platform.
pub(crate) fn row_hash(m: &Member) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, &m.id.0.to_le_bytes());
    h = fnv1a(h, &m.incarnation.to_le_bytes());
    h = fnv1a(h, &[state_byte(m.state)]);
    h = fnv1a(h, &(m.address.len() as u64).to_le_bytes());
    h = fnv1a(h, m.address.as_bytes());
    mix64(h)
}

/// The bucket of `member` among `count` buckets (`count` a power of two).
pub(crate) fn bucket_of(member: NodeId, count: usize) -> usize {
    let bits = count.trailing_zeros();
    if bits == 0 {
        return 0;
    }
    (mix64(u64::from(member.0) ^ 0x5357_494d_4255_434b) >> (64 - bits)) as usize
}

/// Whether `count` is a bucket count this crate sends and accepts.
pub(crate) fn valid_bucket_count(count: usize) -> bool {
    count.is_power_of_two() && count <= MAX_DIGEST_BUCKETS
}

/// How many buckets a table of `rows` rows is split into: the power of two at or above
/// `√rows`, at most [`MAX_DIGEST_BUCKETS`].
pub fn digest_bucket_count(rows: usize) -> usize {
    let root = (rows as f64).sqrt().ceil() as usize;
    root.max(1).next_power_of_two().min(MAX_DIGEST_BUCKETS)
}

/// The hash of a whole table.
pub(crate) fn root_hash<'a>(rows: impl Iterator<Item = &'a Member>) -> u64 {
    rows.fold(0u64, |acc, m| acc.wrapping_add(row_hash(m)))
}

/// The hash of each of `count` buckets of a table.
pub(crate) fn bucket_hashes<'a>(rows: impl Iterator<Item = &'a Member>, count: usize) -> Vec<u64> {
    let mut v = vec![0u64; count];
    for m in rows {
        let b = bucket_of(m.id, count);
        v[b] = v[b].wrapping_add(row_hash(m));
    }
    v
}

#[cfg(test)]
mod tests {
    use kvlab_types::Time;

    use super::*;

    fn row(id: u32, inc: u64, state: MemberState, addr: &str) -> Member {
        Member {
            id: NodeId(id),
            address: addr.into(),
            incarnation: inc,
            state,
            state_since: Time::ZERO,
        }
    }

    #[test]
    fn root_is_the_sum_of_the_buckets_and_ignores_order() {
        let rows: Vec<Member> = (0..100)
            .map(|i| row(i, u64::from(i % 3), MemberState::Alive, &format!("n{i}")))
            .collect();
        let root = root_hash(rows.iter());
        assert_eq!(root, root_hash(rows.iter().rev()));
        for count in [1, 2, 16, 256] {
            let b = bucket_hashes(rows.iter(), count);
            assert_eq!(b.len(), count);
            assert_eq!(b.iter().fold(0u64, |a, h| a.wrapping_add(*h)), root);
        }
    }

    #[test]
    fn every_repaired_field_changes_the_hash_but_the_clock_does_not() {
        let base = row(7, 3, MemberState::Alive, "n7/a");
        let h = row_hash(&base);
        assert_ne!(h, row_hash(&row(8, 3, MemberState::Alive, "n7/a")));
        assert_ne!(h, row_hash(&row(7, 4, MemberState::Alive, "n7/a")));
        assert_ne!(h, row_hash(&row(7, 3, MemberState::Suspect, "n7/a")));
        assert_ne!(h, row_hash(&row(7, 3, MemberState::Alive, "n7/b")));
        let later = Member {
            state_since: Time::from_secs(9),
            ..base.clone()
        };
        assert_eq!(h, row_hash(&later));
    }

    #[test]
    fn bucket_counts_grow_like_the_square_root_and_stay_bounded() {
        assert_eq!(digest_bucket_count(0), 1);
        assert_eq!(digest_bucket_count(1), 1);
        assert_eq!(digest_bucket_count(10), 4);
        assert_eq!(digest_bucket_count(1_000), 32);
        assert_eq!(digest_bucket_count(1 << 16), MAX_DIGEST_BUCKETS);
        assert_eq!(digest_bucket_count(usize::MAX / 2), MAX_DIGEST_BUCKETS);
        for c in [1, 2, 4, 256] {
            assert!(valid_bucket_count(c));
        }
        for c in [0, 3, 257, 512] {
            assert!(!valid_bucket_count(c));
        }
    }

    #[test]
    fn buckets_are_even_over_consecutive_ids() {
        let count = 16;
        let mut sizes = vec![0usize; count];
        for id in 0..4_096u32 {
            let b = bucket_of(NodeId(id), count);
            assert!(b < count);
            sizes[b] += 1;
        }
        // 256 expected per bucket.
        assert!(sizes.iter().all(|s| (192..=320).contains(s)), "{sizes:?}");
        assert!((0..100).all(|i| bucket_of(NodeId(i), 1) == 0));
    }
}
