use super::*;

/// Builds a raw header block with a valid checksum.
fn header(name: &str, typeflag: u8, size: u64) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    let size_field = format!("{size:011o}\0");
    b[124..136].copy_from_slice(size_field.as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    fix_checksum(&mut b);
    b
}

fn fix_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    let field = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(field.as_bytes());
}

fn data_blocks(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
    v
}

fn pax_data(records: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        loop {
            let total = body.len() + len.to_string().len();
            if total == len {
                break;
            }
            len = total;
        }
        out.extend_from_slice(format!("{len}{body}").as_bytes());
    }
    out
}

fn end() -> Vec<u8> {
    vec![0u8; 2 * BLOCK]
}

fn member(name: &str, data: &[u8]) -> Vec<u8> {
    let mut v = header(name, b'0', data.len() as u64).to_vec();
    v.extend(data_blocks(data));
    v
}

fn read_all(bytes: &[u8]) -> Result<Vec<TarEntry>, TarError> {
    let mut reader = StrictTarReader::new(bytes);
    let mut out = Vec::new();
    while let Some(e) = reader.next_entry(|_, _| Some(u64::MAX))? {
        out.push(e);
    }
    Ok(out)
}

fn names(entries: &[TarEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn reads_a_plain_archive() {
    let mut tar = member("a.flac", b"hello");
    tar.extend(member("a.json", b"{}"));
    tar.extend(end());
    let entries = read_all(&tar).unwrap();
    assert_eq!(names(&entries), ["a.flac", "a.json"]);
    assert_eq!(entries[0].data, EntryData::Loaded(b"hello".to_vec()));
}

#[test]
fn reads_what_tar_rs_writes_including_long_names() {
    let mut builder = ::tar::Builder::new(Vec::new());
    let long = format!("{}/sample.flac", "d".repeat(150));
    for name in ["x/one.wav", long.as_str()] {
        let mut h = ::tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        builder.append_data(&mut h, name, &b"abc"[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let entries = read_all(&tar).unwrap();
    assert_eq!(names(&entries), ["x/one.wav", long.as_str()]);
}

#[test]
fn pax_size_must_match_the_header() {
    // The TARmageddon pattern: PAX says 1024, the header says 0.
    let pax = pax_data(&[("size", "1024")]);
    let mut tar = header("PaxHeader", b'x', pax.len() as u64).to_vec();
    tar.extend(data_blocks(&pax));
    tar.extend(header("outer.flac", b'0', 0));
    tar.extend(member("inner.flac", &[1u8; 100]));
    tar.extend(end());
    let err = read_all(&tar).unwrap_err();
    assert!(err.reason.contains("PAX size 1024 disagrees"), "{err}");
}

#[test]
fn pax_path_and_matching_size_are_accepted() {
    let pax = pax_data(&[("path", "long/name.flac"), ("size", "3")]);
    let mut tar = header("PaxHeader", b'x', pax.len() as u64).to_vec();
    tar.extend(data_blocks(&pax));
    tar.extend(member("short.flac", b"abc"));
    tar.extend(end());
    let entries = read_all(&tar).unwrap();
    assert_eq!(names(&entries), ["long/name.flac"]);
}

#[test]
fn malformed_pax_records_are_rejected() {
    for bad in [
        b"5 a=b\n".to_vec(),
        b"7 a=b\n".to_vec(),
        b"x a=b\n".to_vec(),
        b"6 ab\n".to_vec(),
        [pax_data(&[("path", "a")]), pax_data(&[("path", "b")])].concat(),
    ] {
        let mut tar = header("PaxHeader", b'x', bad.len() as u64).to_vec();
        tar.extend(data_blocks(&bad));
        tar.extend(member("a.flac", b"abc"));
        tar.extend(end());
        assert!(
            read_all(&tar).is_err(),
            "{:?}",
            String::from_utf8_lossy(&bad)
        );
    }
}

#[test]
fn ambiguous_structures_are_rejected() {
    // Directory with a size.
    let mut dir = header("d/", b'5', 512).to_vec();
    dir.extend(vec![0u8; BLOCK]);
    dir.extend(member("a.flac", b"x"));
    dir.extend(end());
    // Two PAX headers in a row.
    let pax = pax_data(&[("path", "p.flac")]);
    let mut double = Vec::new();
    for _ in 0..2 {
        double.extend(header("PaxHeader", b'x', pax.len() as u64));
        double.extend(data_blocks(&pax));
    }
    double.extend(member("a.flac", b"x"));
    double.extend(end());
    // PAX header at the end of the archive.
    let mut dangling = header("PaxHeader", b'x', pax.len() as u64).to_vec();
    dangling.extend(data_blocks(&pax));
    dangling.extend(end());
    // Data after the end marker.
    let mut trailing = member("a.flac", b"x");
    trailing.extend(end());
    trailing.extend(member("hidden.flac", b"y"));
    // No end marker.
    let missing_end = member("a.flac", b"x");
    // Truncated data.
    let mut truncated = header("a.flac", b'0', 2000).to_vec();
    truncated.extend(vec![1u8; 100]);
    // Bad checksum.
    let mut bad_sum = member("a.flac", b"x");
    bad_sum[0] = b'b';
    bad_sum.extend(end());
    // Sparse file.
    let mut sparse = header("a.flac", b'S', 0).to_vec();
    sparse.extend(end());
    // Global header setting a path.
    let mut global = header("g", b'g', pax.len() as u64).to_vec();
    global.extend(data_blocks(&pax));
    global.extend(member("a.flac", b"x"));
    global.extend(end());
    // Non-octal size.
    let mut bad_size = header("a.flac", b'0', 1).to_vec();
    bad_size[124..136].copy_from_slice(b"0000000001x\0");
    fix_checksum((&mut bad_size[..BLOCK]).try_into().unwrap());
    bad_size.extend(data_blocks(b"x"));
    bad_size.extend(end());
    for (what, tar) in [
        ("dir with size", dir),
        ("double pax", double),
        ("dangling pax", dangling),
        ("trailing data", trailing),
        ("missing end", missing_end),
        ("truncated", truncated),
        ("bad checksum", bad_sum),
        ("sparse", sparse),
        ("global path", global),
        ("bad size", bad_size),
    ] {
        assert!(read_all(&tar).is_err(), "{what} was accepted");
    }
}

#[test]
fn zero_padding_after_the_end_marker_is_fine() {
    let mut tar = member("a.flac", b"x");
    tar.extend(vec![0u8; 10 * BLOCK]);
    assert_eq!(read_all(&tar).unwrap().len(), 1);
}

#[test]
fn data_can_be_skipped_or_capped() {
    let mut tar = member("a.flac", &[7u8; 1000]);
    tar.extend(member("b.flac", &[7u8; 10]));
    tar.extend(end());
    let mut reader = StrictTarReader::new(&tar[..]);
    let a = reader.next_entry(|_, _| Some(100)).unwrap().unwrap();
    assert_eq!(a.data, EntryData::TooLarge);
    let b = reader.next_entry(|_, _| None).unwrap().unwrap();
    assert_eq!(b.data, EntryData::Skipped);
    assert!(reader.next_entry(|_, _| None).unwrap().is_none());
}

#[test]
fn webdataset_keys_follow_base_plus_ext() {
    assert_eq!(webdataset_key("abc.flac"), Some(("abc", "flac")));
    assert_eq!(
        webdataset_key("dir/abc.seg.json"),
        Some(("dir/abc", "seg.json"))
    );
    assert_eq!(webdataset_key("a.b/c.flac"), Some(("a.b/c", "flac")));
    assert_eq!(
        webdataset_key("x/.hidden.flac"),
        Some(("x/", "hidden.flac"))
    );
    assert_eq!(webdataset_key("noext"), None);
    assert_eq!(webdataset_key("a.b/noext"), None);
    assert_eq!(webdataset_key(".flac"), None);
}

#[test]
fn webdataset_meta_names() {
    assert!(webdataset_meta("__meta__"));
    assert!(webdataset_meta("__x__/a.flac"));
    assert!(!webdataset_meta("__x_.flac"));
    assert!(!webdataset_meta("a/__x__"));
    assert!(!webdataset_meta("sample.flac"));
}
