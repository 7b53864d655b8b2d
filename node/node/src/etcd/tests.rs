//! The etcd keyspace, one behaviour (and every error path) per test; the expected values
//! are what etcd 3.4 answers (the differential test in kvlab-etcd checks the same against
//! a real etcd).

use super::*;

fn k(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn put(key: &str, value: &str) -> EtcdRequest {
    EtcdRequest::Put(rpc::PutRequest {
        key: k(key),
        value: k(value),
        ..Default::default()
    })
}

fn put_req(key: &str, value: &str) -> rpc::PutRequest {
    rpc::PutRequest {
        key: k(key),
        value: k(value),
        ..Default::default()
    }
}

fn get(key: &str) -> rpc::RangeRequest {
    rpc::RangeRequest {
        key: k(key),
        ..Default::default()
    }
}

fn range(s: &mut EtcdStore, r: rpc::RangeRequest) -> Result<rpc::RangeResponse, EtcdError> {
    match s.apply_request(&EtcdRequest::Range(r))? {
        EtcdResponse::Range(r) => Ok(r),
        other => panic!("not a range response: {other:?}"),
    }
}

fn txn(s: &mut EtcdStore, t: rpc::TxnRequest) -> Result<rpc::TxnResponse, EtcdError> {
    match s.apply_request(&EtcdRequest::Txn(t))? {
        EtcdResponse::Txn(r) => Ok(r),
        other => panic!("not a txn response: {other:?}"),
    }
}

fn op_put(key: &str, value: &str) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(Request::RequestPut(put_req(key, value))),
    }
}

fn op_get(key: &str) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(Request::RequestRange(get(key))),
    }
}

fn op_del(key: &str, end: &str) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(Request::RequestDeleteRange(rpc::DeleteRangeRequest {
            key: k(key),
            range_end: k(end),
            ..Default::default()
        })),
    }
}

fn cmp(key: &str, result: CompareResult, target: TargetUnion) -> rpc::Compare {
    let t = match target {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    rpc::Compare {
        result: result as i32,
        target: t as i32,
        key: k(key),
        range_end: Vec::new(),
        target_union: Some(target),
    }
}

fn rev_of(h: &Option<rpc::ResponseHeader>) -> i64 {
    h.as_ref().map_or(-1, |h| h.revision)
}

#[test]
fn an_empty_store_is_at_revision_1_and_each_put_raises_it_by_one() {
    let mut s = EtcdStore::default();
    assert_eq!(s.revision(), 1);
    let r = range(&mut s, get("a")).unwrap();
    assert_eq!((rev_of(&r.header), r.count, r.kvs.len()), (1, 0, 0));
    s.apply_request(&put("a", "1")).unwrap();
    s.apply_request(&put("a", "2")).unwrap();
    let r = range(&mut s, get("a")).unwrap();
    assert_eq!(rev_of(&r.header), 3);
    let kv = &r.kvs[0];
    assert_eq!(
        (
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.value.as_slice()
        ),
        (2, 3, 2, b"2".as_slice())
    );
}

#[test]
fn put_returns_prev_kv_only_when_asked_and_only_if_present() {
    let mut s = EtcdStore::default();
    let mut p = put_req("a", "1");
    p.prev_kv = true;
    let EtcdResponse::Put(r) = s.apply_request(&EtcdRequest::Put(p.clone())).unwrap() else {
        panic!()
    };
    assert_eq!((rev_of(&r.header), r.prev_kv), (2, None));
    p.value = k("2");
    let EtcdResponse::Put(r) = s.apply_request(&EtcdRequest::Put(p)).unwrap() else {
        panic!()
    };
    assert_eq!(r.prev_kv.unwrap().value, k("1"));
    let EtcdResponse::Put(r) = s.apply_request(&put("a", "3")).unwrap() else {
        panic!()
    };
    assert_eq!(r.prev_kv, None);
}

#[test]
fn put_errors_are_etcds() {
    let mut s = EtcdStore::default();
    let cases = [
        (put_req("", "v"), EtcdError::empty_key()),
        (
            rpc::PutRequest {
                ignore_value: true,
                ..put_req("a", "v")
            },
            EtcdError::value_provided(),
        ),
        (
            rpc::PutRequest {
                ignore_lease: true,
                lease: 5,
                ..put_req("a", "")
            },
            EtcdError::lease_provided(),
        ),
        (
            rpc::PutRequest {
                ignore_value: true,
                ..put_req("missing", "")
            },
            EtcdError::key_not_found(),
        ),
        (
            rpc::PutRequest {
                ignore_lease: true,
                ..put_req("missing", "x")
            },
            EtcdError::key_not_found(),
        ),
        (
            rpc::PutRequest {
                lease: 7,
                ..put_req("a", "x")
            },
            EtcdError::lease_not_found(),
        ),
    ];
    for (p, e) in cases {
        assert_eq!(
            s.apply_request(&EtcdRequest::Put(p.clone())),
            Err(e),
            "{p:?}"
        );
    }
    assert_eq!(s.revision(), 1, "no failed put changed anything");
    assert_eq!(EtcdError::lease_not_found().code, Code::NotFound);
}

#[test]
fn ignore_value_keeps_the_value_and_bumps_the_version() {
    let mut s = EtcdStore::default();
    s.apply_request(&put("a", "keep")).unwrap();
    let p = rpc::PutRequest {
        ignore_value: true,
        ..put_req("a", "")
    };
    s.apply_request(&EtcdRequest::Put(p)).unwrap();
    let kv = range(&mut s, get("a")).unwrap().kvs.remove(0);
    assert_eq!((kv.value, kv.version, kv.mod_revision), (k("keep"), 2, 3));
}

#[test]
fn range_end_prefix_all_from_limit_count_more_keys_only_count_only() {
    let mut s = EtcdStore::default();
    for key in ["a", "b", "b1", "b2", "c"] {
        s.apply_request(&put(key, key)).unwrap();
    }
    let r = |key: &str, end: &[u8]| rpc::RangeRequest {
        key: k(key),
        range_end: end.to_vec(),
        ..Default::default()
    };
    let keys = |r: &rpc::RangeResponse| {
        r.kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect::<Vec<_>>()
    };
    // Prefix "b": range_end "c".
    let p = range(&mut s, r("b", b"c")).unwrap();
    assert_eq!(
        (keys(&p), p.count, p.more),
        (vec!["b".to_string(), "b1".into(), "b2".into()], 3, false)
    );
    // "\0": everything from the key on.
    let all = range(&mut s, r("b1", b"\0")).unwrap();
    assert_eq!(keys(&all), ["b1", "b2", "c"]);
    let every = range(&mut s, r("\0", b"\0")).unwrap();
    assert_eq!(every.count, 5);
    // An end at or before the key is empty.
    assert_eq!(range(&mut s, r("c", b"a")).unwrap().count, 0);
    // Limit: `more`, and the count of everything.
    let lim = range(
        &mut s,
        rpc::RangeRequest {
            limit: 2,
            ..r("a", b"\0")
        },
    )
    .unwrap();
    assert_eq!(
        (keys(&lim), lim.count, lim.more),
        (vec!["a".to_string(), "b".into()], 5, true)
    );
    let ko = range(
        &mut s,
        rpc::RangeRequest {
            keys_only: true,
            ..r("a", b"b")
        },
    )
    .unwrap();
    assert!(ko.kvs[0].value.is_empty() && ko.kvs[0].version == 1);
    let co = range(
        &mut s,
        rpc::RangeRequest {
            count_only: true,
            ..r("a", b"\0")
        },
    )
    .unwrap();
    assert_eq!((co.count, co.kvs.len(), co.more), (5, 0, false));
    assert_eq!(range(&mut s, get("")), Err(EtcdError::empty_key()));
}

#[test]
fn range_sorts_by_any_target_and_filters_by_revisions() {
    let mut s = EtcdStore::default();
    for (key, v) in [("a", "3"), ("b", "1"), ("c", "2")] {
        s.apply_request(&put(key, v)).unwrap();
    }
    s.apply_request(&put("a", "0")).unwrap(); // a: mod 5, version 2
    let all = |order: SortOrder, target: SortTarget| rpc::RangeRequest {
        key: k("a"),
        range_end: k("z"),
        sort_order: order as i32,
        sort_target: target as i32,
        ..Default::default()
    };
    let keys = |r: rpc::RangeResponse| {
        r.kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect::<String>()
    };
    let sorted = |s: &mut EtcdStore, o, t| keys(range(s, all(o, t)).unwrap());
    assert_eq!(sorted(&mut s, SortOrder::Descend, SortTarget::Key), "cba");
    assert_eq!(sorted(&mut s, SortOrder::Ascend, SortTarget::Value), "abc");
    assert_eq!(sorted(&mut s, SortOrder::Descend, SortTarget::Mod), "acb");
    assert_eq!(
        sorted(&mut s, SortOrder::Descend, SortTarget::Version),
        "abc"
    );
    // A non-key target without an order sorts ascending.
    assert_eq!(sorted(&mut s, SortOrder::None, SortTarget::Create), "abc");
    assert_eq!(
        sorted(&mut s, SortOrder::Descend, SortTarget::Create),
        "cba"
    );
    let filtered = rpc::RangeRequest {
        min_mod_revision: 3,
        max_mod_revision: 4,
        ..all(SortOrder::None, SortTarget::Key)
    };
    let f = range(&mut s, filtered).unwrap();
    assert_eq!((f.count, keys(f)), (3, "bc".to_string()));
    let created = rpc::RangeRequest {
        min_create_revision: 3,
        max_create_revision: 3,
        ..all(SortOrder::None, SortTarget::Key)
    };
    assert_eq!(keys(range(&mut s, created).unwrap()), "b");
}

#[test]
fn reads_at_old_revisions_see_the_past_and_errors_bound_them() {
    let mut s = EtcdStore::default();
    s.apply_request(&put("a", "1")).unwrap(); // rev 2
    s.apply_request(&put("a", "2")).unwrap(); // rev 3
    s.apply_request(&EtcdRequest::DeleteRange(rpc::DeleteRangeRequest {
        key: k("a"),
        ..Default::default()
    }))
    .unwrap(); // rev 4
    let at = |rev| rpc::RangeRequest {
        revision: rev,
        ..get("a")
    };
    assert_eq!(range(&mut s, at(2)).unwrap().kvs[0].value, k("1"));
    assert_eq!(rev_of(&range(&mut s, at(2)).unwrap().header), 4);
    assert_eq!(range(&mut s, at(3)).unwrap().kvs[0].value, k("2"));
    assert_eq!(range(&mut s, at(4)).unwrap().count, 0);
    assert_eq!(range(&mut s, at(1)).unwrap().count, 0);
    assert_eq!(range(&mut s, at(5)), Err(EtcdError::future_rev()));
    assert_eq!(
        EtcdError::future_rev().message,
        "etcdserver: mvcc: required revision is a future revision"
    );
}

#[test]
fn compaction_keeps_what_later_reads_need_and_refuses_older_ones() {
    let mut s = EtcdStore::default();
    s.apply_request(&put("a", "1")).unwrap(); // 2
    s.apply_request(&put("b", "1")).unwrap(); // 3
    s.apply_request(&put("a", "2")).unwrap(); // 4
    s.apply_request(&EtcdRequest::DeleteRange(rpc::DeleteRangeRequest {
        key: k("b"),
        ..Default::default()
    }))
    .unwrap(); // 5
    let compact = |rev| {
        EtcdRequest::Compact(rpc::CompactionRequest {
            revision: rev,
            physical: false,
        })
    };
    assert_eq!(s.apply_request(&compact(6)), Err(EtcdError::future_rev()));
    let EtcdResponse::Compact(c) = s.apply_request(&compact(4)).unwrap() else {
        panic!()
    };
    assert_eq!(rev_of(&c.header), 5);
    assert_eq!(s.apply_request(&compact(4)), Err(EtcdError::compacted()));
    assert_eq!(s.apply_request(&compact(3)), Err(EtcdError::compacted()));
    assert_eq!(
        EtcdError::compacted().message,
        "etcdserver: mvcc: required revision has been compacted"
    );
    let at = |key: &str, rev| rpc::RangeRequest {
        revision: rev,
        ..get(key)
    };
    assert_eq!(range(&mut s, at("a", 3)), Err(EtcdError::compacted()));
    assert_eq!(range(&mut s, at("a", 4)).unwrap().kvs[0].value, k("2"));
    assert_eq!(range(&mut s, at("b", 4)).unwrap().kvs[0].value, k("1"));
    assert_eq!(range(&mut s, at("b", 5)).unwrap().count, 0);
    s.apply_request(&compact(5)).unwrap();
    // b's tombstone at 5 went with the compaction: nothing of b is kept.
    assert!(!s.keys.contains_key(b"b".as_slice()));
    assert_eq!(s.keys[b"a".as_slice()].len(), 1);
    // A txn reading below the compaction is refused as a whole.
    let t = rpc::TxnRequest {
        success: vec![rpc::RequestOp {
            request: Some(Request::RequestRange(at("a", 4))),
        }],
        ..Default::default()
    };
    assert_eq!(txn(&mut s, t), Err(EtcdError::compacted()));
}

#[test]
fn delete_range_counts_returns_prev_kvs_and_a_miss_keeps_the_revision() {
    let mut s = EtcdStore::default();
    for key in ["a", "b", "c"] {
        s.apply_request(&put(key, key)).unwrap();
    }
    let del = |key: &str, end: &str, prev_kv| {
        EtcdRequest::DeleteRange(rpc::DeleteRangeRequest {
            key: k(key),
            range_end: k(end),
            prev_kv,
        })
    };
    let EtcdResponse::DeleteRange(r) = s.apply_request(&del("zz", "", true)).unwrap() else {
        panic!()
    };
    assert_eq!((r.deleted, rev_of(&r.header), s.revision()), (0, 4, 4));
    let EtcdResponse::DeleteRange(r) = s.apply_request(&del("a", "c", true)).unwrap() else {
        panic!()
    };
    assert_eq!((r.deleted, rev_of(&r.header), r.prev_kvs.len()), (2, 5, 2));
    assert_eq!(
        s.apply_request(&del("", "", false)),
        Err(EtcdError::empty_key())
    );
    // A re-created key starts a new life: version 1, a new create revision.
    s.apply_request(&put("a", "again")).unwrap();
    let kv = range(&mut s, get("a")).unwrap().kvs.remove(0);
    assert_eq!((kv.version, kv.create_revision), (1, 6));
}

#[test]
fn txn_compares_on_every_target_with_every_operator() {
    let mut s = EtcdStore::default();
    s.apply_request(&put("a", "m")).unwrap(); // create 2, mod 2, version 1
    s.apply_request(&put("a", "m")).unwrap(); // mod 3, version 2
    use CompareResult::*;
    let cases = [
        (cmp("a", Equal, TargetUnion::Value(k("m"))), true),
        (cmp("a", Greater, TargetUnion::Value(k("l"))), true),
        (cmp("a", Less, TargetUnion::Value(k("l"))), false),
        (cmp("a", NotEqual, TargetUnion::Value(k("m"))), false),
        (cmp("a", Equal, TargetUnion::Version(2)), true),
        (cmp("a", Greater, TargetUnion::Version(1)), true),
        (cmp("a", Equal, TargetUnion::CreateRevision(2)), true),
        (cmp("a", Less, TargetUnion::CreateRevision(2)), false),
        (cmp("a", Equal, TargetUnion::ModRevision(3)), true),
        (cmp("a", NotEqual, TargetUnion::ModRevision(3)), false),
        (cmp("a", Equal, TargetUnion::Lease(0)), true),
        // A missing key: version/create/mod compare as 0; a value compare fails.
        (cmp("x", Equal, TargetUnion::Version(0)), true),
        (cmp("x", Equal, TargetUnion::CreateRevision(0)), true),
        (cmp("x", Equal, TargetUnion::Value(Vec::new())), false),
        (cmp("x", NotEqual, TargetUnion::Value(k("q"))), false),
    ];
    for (c, want) in cases {
        let t = rpc::TxnRequest {
            compare: vec![c.clone()],
            ..Default::default()
        };
        assert_eq!(txn(&mut s, t).unwrap().succeeded, want, "{c:?}");
    }
    // A compare over a range holds only if it holds for every key in it.
    s.apply_request(&put("b", "m")).unwrap();
    let mut over = cmp("a", Equal, TargetUnion::Value(k("m")));
    over.range_end = k("c");
    let t = rpc::TxnRequest {
        compare: vec![over.clone()],
        ..Default::default()
    };
    assert!(txn(&mut s, t).unwrap().succeeded);
    over.target_union = Some(TargetUnion::Version(1));
    over.target = CompareTarget::Version as i32;
    let t = rpc::TxnRequest {
        compare: vec![over],
        ..Default::default()
    };
    assert!(!txn(&mut s, t).unwrap().succeeded);
}

#[test]
fn txn_writes_share_one_revision_and_reads_see_earlier_writes() {
    let mut s = EtcdStore::default();
    let t = rpc::TxnRequest {
        compare: vec![],
        success: vec![op_get("a"), op_put("a", "1"), op_put("b", "2"), op_get("a")],
        failure: vec![],
    };
    let r = txn(&mut s, t).unwrap();
    assert!(r.succeeded);
    assert_eq!(rev_of(&r.header), 2);
    assert_eq!(s.revision(), 2);
    let Some(Response::ResponseRange(first)) = &r.responses[0].response else {
        panic!()
    };
    assert_eq!((first.count, rev_of(&first.header)), (0, 1));
    let Some(Response::ResponsePut(p)) = &r.responses[1].response else {
        panic!()
    };
    assert_eq!(rev_of(&p.header), 2);
    let Some(Response::ResponseRange(last)) = &r.responses[3].response else {
        panic!()
    };
    assert_eq!((last.kvs[0].mod_revision, rev_of(&last.header)), (2, 2));
    // A read-only txn keeps the revision.
    let ro = rpc::TxnRequest {
        success: vec![op_get("a")],
        ..Default::default()
    };
    assert_eq!(rev_of(&txn(&mut s, ro).unwrap().header), 2);
    assert_eq!(s.revision(), 2);
}

#[test]
fn nested_txns_judge_their_compares_before_the_outer_writes() {
    let mut s = EtcdStore::default();
    let inner = rpc::TxnRequest {
        // Judged on the state before the outer txn: "a" is absent then.
        compare: vec![cmp("a", CompareResult::Equal, TargetUnion::Version(0))],
        success: vec![op_put("b", "inner-then")],
        failure: vec![op_put("b", "inner-else")],
    };
    let outer = rpc::TxnRequest {
        compare: vec![],
        success: vec![
            op_put("a", "1"),
            rpc::RequestOp {
                request: Some(Request::RequestTxn(inner)),
            },
        ],
        failure: vec![],
    };
    let r = txn(&mut s, outer).unwrap();
    let Some(Response::ResponseTxn(nested)) = &r.responses[1].response else {
        panic!()
    };
    assert!(nested.succeeded);
    // Nested responses carry an empty header, as etcd's.
    assert_eq!(nested.header, Some(rpc::ResponseHeader::default()));
    assert_eq!(
        range(&mut s, get("b")).unwrap().kvs[0].value,
        k("inner-then")
    );
    assert_eq!(s.revision(), 2);
}

#[test]
fn txn_refuses_duplicate_keys_too_many_ops_and_empty_ops() {
    let mut s = EtcdStore::default();
    let dup = |success| rpc::TxnRequest {
        success,
        ..Default::default()
    };
    let nested = |success, failure| rpc::RequestOp {
        request: Some(Request::RequestTxn(rpc::TxnRequest {
            compare: vec![],
            success,
            failure,
        })),
    };
    let bad = [
        dup(vec![op_put("a", "1"), op_put("a", "2")]),
        dup(vec![op_put("a", "1"), op_del("a", "")]),
        dup(vec![op_del("a", "c"), op_put("b", "1")]),
        dup(vec![
            op_put("a", "1"),
            nested(vec![op_put("a", "2")], vec![]),
        ]),
        dup(vec![op_del("a", "\0"), op_put("b", "1")]),
    ];
    for t in &bad[..4] {
        assert_eq!(
            txn(&mut s, t.clone()),
            Err(EtcdError::duplicate_key()),
            "{t:?}"
        );
    }
    // A delete with range_end "\0" is not an interval etcd's check sees (its end is
    // below its start): no duplicate.
    assert!(txn(&mut s, bad[4].clone()).is_ok());
    // The two branches of one nested txn may put the same key.
    let ok = dup(vec![nested(vec![op_put("a", "1")], vec![op_put("a", "2")])]);
    assert!(txn(&mut s, ok).is_ok());
    let many = dup((0..=MAX_TXN_OPS)
        .map(|i| op_get(&format!("k{i}")))
        .collect());
    assert_eq!(txn(&mut s, many), Err(EtcdError::too_many_ops()));
    let empty = dup(vec![rpc::RequestOp { request: None }]);
    assert_eq!(txn(&mut s, empty), Err(EtcdError::key_not_found()));
    let empty_key = dup(vec![op_get("")]);
    assert_eq!(txn(&mut s, empty_key), Err(EtcdError::empty_key()));
    // A compare on no key, even in a nested txn, is refused before the duplicate check.
    let no_key = rpc::TxnRequest {
        compare: vec![cmp("", CompareResult::Equal, TargetUnion::Version(0))],
        ..Default::default()
    };
    assert_eq!(txn(&mut s, no_key.clone()), Err(EtcdError::empty_key()));
    let nested_no_key = dup(vec![
        op_put("a", "1"),
        op_put("a", "2"),
        rpc::RequestOp {
            request: Some(Request::RequestTxn(no_key)),
        },
    ]);
    assert_eq!(txn(&mut s, nested_no_key), Err(EtcdError::empty_key()));
}

#[test]
fn a_txn_that_deletes_then_puts_with_ignore_value_is_refused_whole() {
    // etcd 3.4's duplicate check misses a delete to "\0"; etcd then panics applying the
    // put ("unexpected error during txn"). kvlab answers "key not found" and undoes the
    // txn's earlier writes.
    let mut s = EtcdStore::default();
    s.apply_request(&put("e", "1")).unwrap();
    let ignore = rpc::RequestOp {
        request: Some(Request::RequestPut(rpc::PutRequest {
            ignore_value: true,
            ..put_req("e", "")
        })),
    };
    let t = rpc::TxnRequest {
        success: vec![op_put("a", "x"), op_del("c", "\0"), ignore],
        ..Default::default()
    };
    assert_eq!(txn(&mut s, t), Err(EtcdError::key_not_found()));
    assert_eq!(s.revision(), 2);
    assert_eq!(range(&mut s, get("e")).unwrap().kvs[0].value, k("1"));
    assert_eq!(range(&mut s, get("a")).unwrap().count, 0);
}

#[test]
fn a_txn_whose_taken_branch_fails_a_check_changes_nothing() {
    let mut s = EtcdStore::default();
    s.apply_request(&put("a", "1")).unwrap();
    let ignore_missing = rpc::RequestOp {
        request: Some(Request::RequestPut(rpc::PutRequest {
            ignore_value: true,
            ..put_req("missing", "")
        })),
    };
    let t = rpc::TxnRequest {
        compare: vec![],
        success: vec![op_put("b", "1"), ignore_missing.clone()],
        failure: vec![],
    };
    assert_eq!(txn(&mut s, t), Err(EtcdError::key_not_found()));
    let leased = rpc::RequestOp {
        request: Some(Request::RequestPut(rpc::PutRequest {
            lease: 9,
            ..put_req("c", "1")
        })),
    };
    let t = rpc::TxnRequest {
        success: vec![op_put("b", "1"), leased],
        ..Default::default()
    };
    assert_eq!(txn(&mut s, t), Err(EtcdError::lease_not_found()));
    let future = rpc::RequestOp {
        request: Some(Request::RequestRange(rpc::RangeRequest {
            revision: 99,
            ..get("a")
        })),
    };
    let t = rpc::TxnRequest {
        success: vec![op_put("b", "1"), future],
        ..Default::default()
    };
    assert_eq!(txn(&mut s, t), Err(EtcdError::future_rev()));
    // Checks look at the taken branch only.
    let t = rpc::TxnRequest {
        compare: vec![cmp("a", CompareResult::Equal, TargetUnion::Value(k("1")))],
        success: vec![op_put("b", "1")],
        failure: vec![ignore_missing],
    };
    assert!(txn(&mut s, t).unwrap().succeeded);
    assert_eq!(s.revision(), 3);
    assert_eq!(range(&mut s, get("c")).unwrap().count, 0);
}

#[test]
fn outcomes_round_trip_and_garbage_is_an_error_not_a_panic() {
    let mut s = EtcdStore::default();
    let bytes = s.apply(&put("a", "1").to_op(), 7);
    let o = Outcome::decode(&bytes).unwrap();
    assert_eq!(o.raft_term, 7);
    assert!(matches!(o.result, Ok(EtcdResponse::Put(_))));
    let e = Outcome {
        raft_term: 1,
        result: Err(EtcdError::compacted()),
    };
    assert_eq!(Outcome::decode(&e.encode()).unwrap(), e);
    assert!(Outcome::decode(&[1, 2]).is_err());
    assert!(Outcome::decode(&[0xfe; 12]).is_err());
    // A request that does not decode is answered with an error and changes nothing.
    let garbage = EtcdOp {
        kind: EtcdOpKind::Txn,
        request: vec![0xff; 9],
    };
    let o = Outcome::decode(&s.apply(&garbage, 8)).unwrap();
    assert!(o.result.unwrap_err().message.contains("malformed"));
    assert_eq!(s.revision(), 2);
    // A write is never served as a read.
    let o = Outcome::decode(&s.query(&put("b", "1").to_op())).unwrap();
    assert!(o.result.is_err());
}

#[test]
fn the_store_survives_a_snapshot_and_an_unused_one_encodes_as_before() {
    use crate::kv::KvStore;
    use kvlab_types::{KvOp, RequestId};
    let mut kv = KvStore::default();
    let legacy = postcard::to_allocvec(&kv).unwrap();
    assert_eq!(kv.encode_image(), legacy, "no etcd: the image is unchanged");
    assert_eq!(KvStore::decode_image(&legacy).unwrap(), kv);
    let id = RequestId { client: 1, seq: 1 };
    kv.apply_in_term(id, &KvOp::Etcd(put("a", "1").to_op()), 3)
        .unwrap();
    let image = kv.encode_image();
    assert_ne!(image, legacy);
    let back = KvStore::decode_image(&image).unwrap();
    assert_eq!(back, kv);
    assert_eq!(back.etcd().unwrap().revision(), 2);
    assert_eq!(back.etcd().unwrap().raft_term(), 3);
    // A retried etcd write is answered from the session, not applied twice.
    let mut again = back.clone();
    again
        .apply_in_term(id, &KvOp::Etcd(put("a", "1").to_op()), 3)
        .unwrap();
    assert_eq!(again.etcd().unwrap().revision(), 2);
}

#[test]
fn a_txn_of_ranges_is_served_as_a_read_exactly_as_it_would_be_applied() {
    let mut s = EtcdStore::default();
    s.apply_request(&put("a", "1")).unwrap();
    s.apply_request(&put("b", "2")).unwrap();
    let nested = rpc::RequestOp {
        request: Some(Request::RequestTxn(rpc::TxnRequest {
            compare: vec![cmp("b", CompareResult::Equal, TargetUnion::Value(k("2")))],
            success: vec![op_get("b")],
            failure: vec![op_get("a")],
        })),
    };
    let t = rpc::TxnRequest {
        compare: vec![cmp("a", CompareResult::Greater, TargetUnion::Version(0))],
        success: vec![op_get("a"), nested],
        failure: vec![],
    };
    assert!(txn_is_read_only(&t));
    let req = EtcdRequest::Txn(t.clone());
    let op = req.to_op();
    assert_eq!(op.kind, EtcdOpKind::ReadTxn);
    let served = Outcome::decode(&s.query(&op)).unwrap().result;
    let applied = s.clone().apply_request(&req);
    assert_eq!(served, applied);
    assert!(
        matches!(served, Ok(EtcdResponse::Txn(ref r)) if r.succeeded && r.responses.len() == 2)
    );
    // A txn with a write anywhere is not read-only, and is never served as a read.
    let mut w = t;
    w.failure.push(op_put("c", "3"));
    assert!(!txn_is_read_only(&w));
    assert_eq!(EtcdRequest::Txn(w.clone()).to_op().kind, EtcdOpKind::Txn);
    let forged = EtcdOp {
        kind: EtcdOpKind::ReadTxn,
        request: w.encode_to_vec(),
    };
    assert!(Outcome::decode(&s.query(&forged)).unwrap().result.is_err());
    assert_eq!(s.revision(), 3);
}
