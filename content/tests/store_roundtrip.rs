//! Property tests: whatever goes into a store comes back byte for byte, streaming
//! hashing equals one-shot hashing, and any change to the content is caught.

use bytes::Bytes;
use decloud_content::{
    AddOptions, CHUNK_SIZE, ContentError, ContentStore, EmbeddedStore, FileHasher, cid_of, verify,
};
use proptest::prelude::*;

fn options() -> impl Strategy<Value = AddOptions> {
    prop_oneof![
        Just(AddOptions::KUBO_DEFAULT),
        Just(AddOptions::KUBO_CID_V1),
        Just(AddOptions::KUBO_CID_V1_DAG_PB_LEAVES),
    ]
}

/// Content around the chunk boundary is where layouts differ, so sizes cluster there.
fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..4096),
        (CHUNK_SIZE - 2..CHUNK_SIZE * 2 + 2)
            .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n)),
    ]
}

/// Callers hold stores as trait objects and pick the backend from configuration.
#[tokio::test]
async fn stores_work_as_trait_objects() {
    let dir = tempfile::tempdir().unwrap();
    let store: Box<dyn ContentStore> = Box::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let cid = store.put(Bytes::from_static(b"boxed")).await.unwrap();
    assert_eq!(store.get(&cid).await.unwrap().as_ref(), b"boxed");
    assert_eq!(store.add_options(), AddOptions::KUBO_CID_V1);
    let kubo: Box<dyn ContentStore> =
        Box::new(decloud_content::KuboStore::new("http://127.0.0.1:5001").unwrap());
    assert_eq!(
        kubo.max_object_size(),
        decloud_content::DEFAULT_MAX_OBJECT_SIZE
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn embedded_store_round_trips(data in content(), options in options()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open_with(dir.path(), options, 1 << 24).await.unwrap();
            let cid = store.put(Bytes::from(data.clone())).await.unwrap();
            prop_assert_eq!(cid, cid_of(&data, options));
            prop_assert!(store.has(&cid).await.unwrap());
            let read = store.get(&cid).await.unwrap();
            prop_assert_eq!(read.as_ref(), data.as_slice());

            let source = dir.path().join("source");
            std::fs::write(&source, &data).unwrap();
            prop_assert_eq!(store.put_file(&source).await.unwrap(), cid);
            let exported = dir.path().join("exported");
            store.export_to_file(&cid, &exported).await.unwrap();
            prop_assert_eq!(std::fs::read(&exported).unwrap(), data);
            Ok(())
        })?;
    }

    #[test]
    fn streaming_equals_one_shot(data in content(), options in options(), cuts in proptest::collection::vec(any::<usize>(), 0..5)) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut hasher = FileHasher::new(options);
        let mut start = 0;
        for point in points {
            hasher.update(&data[start..point]);
            start = point;
        }
        hasher.update(&data[start..]);
        prop_assert_eq!(hasher.finish(), cid_of(&data, options));
    }

    #[test]
    fn any_change_is_detected(data in content(), options in options(), at in any::<usize>(), bit in 0u8..8) {
        prop_assume!(!data.is_empty());
        let cid = cid_of(&data, options);
        let mut changed = data.clone();
        let at = at % changed.len();
        changed[at] ^= 1 << bit;
        let is_mismatch = matches!(verify(&cid, &changed), Err(ContentError::Mismatch { .. }));
        prop_assert!(is_mismatch);
        let mut longer = data.clone();
        longer.push(0);
        let is_mismatch = matches!(verify(&cid, &longer), Err(ContentError::Mismatch { .. }));
        prop_assert!(is_mismatch);
    }
}
