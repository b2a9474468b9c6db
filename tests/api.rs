//! The master's HTTP API, row by row as SPEC.md states it, against real nginx volumes and a
//! real `mkv server`: statuses, headers, and the files each request leaves on the volumes.

mod common;

use common::layout::*;
use common::*;
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn placement_helper_matches_the_spec_vectors() {
    assert_eq!(key_path("hello"), "/5d/41/aGVsbG8=");
    assert_eq!(key_path("helloworld"), "/fc/5e/aGVsbG93b3JsZA==");
    let layout = Layout { volumes: ["larry", "moe", "curly"].map(String::from).into(), replicas: 1, subvolumes: 3 };
    let first = |k: &str| layout.replicas(k)[0].split('/').next().unwrap().to_string();
    assert_eq!(
        [first("hello"), first("helloworld"), first("world"), first("blah")],
        ["larry", "curly", "moe", "curly"]
    );
}

// ---- helpers -------------------------------------------------------------------------

/// A cluster of `n` volumes; the master runs 2 threads so parallel tests stay light.
fn cluster(n: usize, extra: &[&str]) -> Cluster {
    let mut args = vec!["-threads", "2", "-voltimeout", "1s"];
    args.extend_from_slice(extra);
    Cluster::new(n, &args)
}

fn put(addr: &str, key: &str, body: &[u8]) -> Response {
    request(addr, "PUT", key, &[], body)
}

fn method(addr: &str, method: &str, key: &str) -> Response {
    request(addr, method, key, &[], b"")
}

/// `GET <path>` of a listing: (keys, next), after checking status and content type.
fn list(addr: &str, path: &str) -> (Vec<String>, String) {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {r:?}");
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{r:?}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("listing is JSON");
    let keys = v["keys"].as_array().expect("keys array").iter().map(|k| k.as_str().unwrap().to_string()).collect();
    (keys, v["next"].as_str().expect("next string").to_string())
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The master's answer to GET (or HEAD) of a stored key, checked header by header.
fn assert_redirect(r: &Response, layout: &Layout, key: &str, body: &[u8]) {
    assert_eq!(r.status, 302, "{key}: {r:?}");
    assert_eq!(r.header("content-length"), Some("0"), "{key}: {r:?}");
    assert!(r.body.is_empty());
    let replicas = layout.replicas(key);
    assert_eq!(r.header("key-volumes"), Some(replicas.join(",").as_str()), "{key}");
    assert_eq!(r.header("key-balance"), Some("balanced"), "{key}");
    assert_eq!(r.header("content-md5"), Some(hex(&md5(body)).as_str()), "{key}");
    let location = r.header("location").expect("Location");
    let candidates: Vec<String> = replicas.iter().map(|v| format!("http://{v}{}", key_path(key))).collect();
    assert!(candidates.iter().any(|c| c == location), "{key}: Location {location} not one of {candidates:?}");
}

// ---- GET / HEAD / PUT ----------------------------------------------------------------

#[test]
fn put_then_get_redirects_to_a_replica_with_every_header_and_files_sit_at_their_paths() {
    let c = cluster(4, &["-replicas", "2", "-subvolumes", "1"]);
    let layout = Layout::of(&c, 2, 1);
    let keys: Vec<String> = (0..24).map(|i| format!("/file-{i}")).collect();
    for key in &keys {
        let r = put(&c.addr(), key, format!("value of {key}").as_bytes());
        assert_eq!(r.status, 201, "PUT {key}: {r:?}");
    }
    for key in &keys {
        let body = format!("value of {key}");
        assert_redirect(&get(&c.addr(), key), &layout, key, body.as_bytes());
        let head = method(&c.addr(), "HEAD", key);
        assert_redirect(&head, &layout, key, body.as_bytes());
        assert_eq!(get_follow(&c.addr(), key).body, body.as_bytes());
    }
    layout.assert_on_disk(&c, &keys.iter().map(String::as_str).collect::<Vec<_>>());
    // an absolute-form target, as a proxy sends it (RFC 9112 §3.2.2: servers accept it)
    let absolute = format!("http://{}{}", c.addr(), keys[0]);
    assert_redirect(&get(&c.addr(), &absolute), &layout, &keys[0], b"value of /file-0");
}

#[test]
fn subvolumes_put_replicas_under_sv_folders() {
    let c = cluster(3, &["-replicas", "2", "-subvolumes", "4"]);
    let layout = Layout::of(&c, 2, 4);
    let keys = ["/hello", "/helloworld", "/world", "/blah", "/a/b/c"];
    for key in keys {
        assert_eq!(put(&c.addr(), key, key.as_bytes()).status, 201);
    }
    for key in keys {
        let r = get(&c.addr(), key);
        assert_redirect(&r, &layout, key, key.as_bytes());
        assert!(r.header("key-volumes").unwrap().split(',').all(|v| v.contains("/sv0")), "{r:?}");
        assert_eq!(get_follow(&c.addr(), key).body, key.as_bytes());
    }
    layout.assert_on_disk(&c, &keys);
}

#[test]
fn defaults_are_three_replicas_on_ten_subvolumes() {
    let c = Cluster::new(3, &["-threads", "2"]);
    assert_eq!(put(&c.addr(), "/defaults", b"x").status, 201);
    let r = get(&c.addr(), "/defaults");
    assert_redirect(&r, &Layout::of(&c, 3, 10), "/defaults", b"x");
    Layout::of(&c, 3, 10).assert_on_disk(&c, &["/defaults"]);
}

#[test]
fn the_redirect_serves_bytes_ranges_and_sizes() {
    let c = cluster(3, &["-replicas", "2"]);
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(put(&c.addr(), "/blob", &body).status, 201);

    assert_eq!(get_follow(&c.addr(), "/blob").body, body);
    let location = get(&c.addr(), "/blob").header("location").unwrap().to_string();
    let (host, path) = split_url(&location);
    let r = request(host, "GET", path, &[("Range", "bytes=10-19")], b"");
    assert_eq!((r.status, r.body.as_slice()), (206, &body[10..20]));
    let r = request(host, "HEAD", path, &[], b"");
    assert_eq!((r.status, r.header("content-length")), (200, Some("100000")));
}

#[test]
fn missing_keys_are_404_with_an_empty_body() {
    let c = cluster(3, &[]);
    for m in ["GET", "HEAD"] {
        let r = method(&c.addr(), m, "/nothing/here");
        assert_eq!((r.status, r.header("content-length")), (404, Some("0")), "{m}: {r:?}");
        assert!(r.header("location").is_none());
    }
}

#[test]
fn put_refuses_empty_bodies_and_live_keys() {
    let c = cluster(3, &[]);
    assert_eq!(request(&c.addr(), "PUT", "/empty", &[("Content-Length", "0")], b"").status, 411);
    let r = raw(&c.addr(), b"PUT /empty HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_millis(300));
    assert_eq!(r.status(), Some(411), "PUT without any body framing: {}", r.text());
    assert_eq!(get(&c.addr(), "/empty").status, 404);

    assert_eq!(put(&c.addr(), "/once", b"first").status, 201);
    assert_eq!(put(&c.addr(), "/once", b"second").status, 403);
    assert_eq!(get_follow(&c.addr(), "/once").body, b"first");
    assert_eq!(get(&c.addr(), "/once").header("content-md5"), Some(hex(&md5(b"first")).as_str()));
}

#[test]
fn twenty_concurrent_puts_of_one_key_have_exactly_one_winner() {
    let c = cluster(3, &[]);
    let addr = c.addr();
    let start = Arc::new(Barrier::new(20));
    let handles: Vec<_> = (0..20u8)
        .map(|i| {
            let (addr, start) = (addr.clone(), start.clone());
            thread::spawn(move || {
                let body = vec![b'a' + i; 256 * 1024];
                start.wait();
                (i, put(&addr, "/contended", &body).status)
            })
        })
        .collect();
    let results: Vec<(u8, u16)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<u8> = results.iter().filter(|(_, s)| *s == 201).map(|(i, _)| *i).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|(_, s)| [201, 403, 409].contains(s)), "{results:?}");
    let stored = get_follow(&addr, "/contended").body;
    assert_eq!(stored, vec![b'a' + winners[0]; 256 * 1024], "the stored value is not the winner's");
    Layout::of(&c, 3, 10).assert_on_disk(&c, &["/contended"]);
}

#[test]
fn chunked_and_expect_continue_puts_store_the_whole_body() {
    let c = cluster(3, &["-replicas", "2"]);
    let chunked = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nTrailer: x\r\n\r\n";
    let r = request(&c.addr(), "PUT", "/chunked", &[("Transfer-Encoding", "chunked")], chunked);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(get_follow(&c.addr(), "/chunked").body, b"hello world!");
    assert_eq!(get(&c.addr(), "/chunked").header("content-md5"), Some(hex(&md5(b"hello world!")).as_str()));

    let mut client = Client::connect(&c.addr());
    client.send(b"PUT /continued HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(client.read_response("PUT").status, 100, "no 100 Continue before the body");
    client.send(b"later");
    assert_eq!(client.read_response("PUT").status, 201);
    assert_eq!(client.request("GET", "/continued", &[], b"").status, 302, "connection reusable");
    assert_eq!(get_follow(&c.addr(), "/continued").body, b"later");
}

#[test]
fn large_values_round_trip() {
    let c = cluster(3, &["-replicas", "3"]);
    let body: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i ^ (i >> 9)) as u8).collect();
    assert_eq!(put(&c.addr(), "/big", &body).status, 201);
    let got = get_follow(&c.addr(), "/big").body;
    assert!(got == body, "24 MiB value differs (got {} bytes)", got.len());
    assert_eq!(get(&c.addr(), "/big").header("content-md5"), Some(hex(&md5(&body)).as_str()));
}

#[test]
fn md5sum_false_stores_no_digest() {
    let c = cluster(3, &["-md5sum=false"]);
    assert_eq!(put(&c.addr(), "/plain", b"x").status, 201);
    let r = get(&c.addr(), "/plain");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("content-md5"), None, "{r:?}");
}

// ---- keys ----------------------------------------------------------------------------

#[test]
fn keys_are_percent_decoded_paths_without_the_query() {
    let c = cluster(3, &["-replicas", "1", "-subvolumes", "1"]);
    let layout = Layout::of(&c, 1, 1);
    assert_eq!(put(&c.addr(), "/a%20b", b"space").status, 201);
    assert_eq!(put(&c.addr(), "/x%2Fy?ignored=1", b"slash").status, 201);
    assert_eq!(put(&c.addr(), "/caf%C3%A9", b"utf8").status, 201);

    assert_eq!(get_follow(&c.addr(), "/a%20b").body, b"space");
    assert_eq!(get_follow(&c.addr(), "/x/y").body, b"slash", "%2F is a plain '/' in the key");
    assert_eq!(get_follow(&c.addr(), "/x%2Fy?other=2").body, b"slash");
    assert_eq!(list(&c.addr(), "/?list").0, strings(&["/a b", "/caf\u{e9}", "/x/y"]));
    assert_eq!(
        get(&c.addr(), "/a%20b").header("location").unwrap(),
        format!("http://{}{}", layout.replicas("/a b")[0], key_path("/a b"))
    );
    layout.assert_on_disk(&c, &["/a b", "/x/y", "/caf\u{e9}"]);

    let r = raw(&c.addr(), b"GET /bad%zzescape HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_millis(300));
    assert_eq!(r.status(), Some(400), "{}", r.text());
}

#[test]
fn keys_whose_file_name_would_pass_255_bytes_are_414() {
    let c = cluster(3, &["-replicas", "1"]);
    // base64 of 189 bytes is 252 characters, of 190 bytes 256
    let longest = format!("/{}", "k".repeat(188));
    let too_long = format!("/{}", "k".repeat(189));
    assert_eq!(put(&c.addr(), &longest, b"fits").status, 201);
    assert_eq!(get_follow(&c.addr(), &longest).body, b"fits");
    assert_eq!(put(&c.addr(), &too_long, b"does not").status, 414);
    assert_eq!(put(&c.addr(), &format!("/{}", "k".repeat(199)), b"x").status, 414);
    assert_eq!(list(&c.addr(), "/?list").0, [longest]);
}

// ---- DELETE / UNLINK -----------------------------------------------------------------

#[test]
fn delete_removes_every_replica_and_the_record() {
    let c = cluster(4, &["-replicas", "3", "-subvolumes", "1"]);
    let layout = Layout::of(&c, 3, 1);
    assert_eq!(put(&c.addr(), "/gone", b"bye").status, 201);
    assert_eq!(put(&c.addr(), "/stays", b"hi").status, 201);
    layout.assert_on_disk(&c, &["/gone", "/stays"]);

    let r = method(&c.addr(), "DELETE", "/gone");
    assert_eq!(r.status, 204, "{r:?}");
    // RFC 9110 §8.6: a server must not send Content-Length in a 204
    assert_eq!(r.header("content-length"), None, "{r:?}");
    layout.assert_on_disk(&c, &["/stays"]);
    assert_eq!(get(&c.addr(), "/gone").status, 404);
    assert_eq!(method(&c.addr(), "DELETE", "/gone").status, 404);
    assert_eq!(method(&c.addr(), "DELETE", "/never").status, 404);
    assert_eq!(list(&c.addr(), "/?list").0, ["/stays"]);
    assert_eq!(list(&c.addr(), "/?unlinked").0, Vec::<String>::new());
    assert_eq!(put(&c.addr(), "/gone", b"again").status, 201, "a deleted key can be written again");
    assert_eq!(get_follow(&c.addr(), "/gone").body, b"again");
}

#[test]
fn unlink_hides_the_key_keeps_the_data_and_a_put_replaces_it() {
    let c = cluster(3, &["-replicas", "2", "-subvolumes", "1"]);
    let layout = Layout::of(&c, 2, 1);
    assert_eq!(put(&c.addr(), "/soft", b"old").status, 201);

    let r = method(&c.addr(), "UNLINK", "/soft");
    assert_eq!((r.status, r.header("content-length")), (204, None), "{r:?}");
    assert_eq!(get(&c.addr(), "/soft").status, 404);
    assert_eq!(method(&c.addr(), "HEAD", "/soft").status, 404);
    assert_eq!(method(&c.addr(), "UNLINK", "/soft").status, 404, "already unlinked");
    assert_eq!(method(&c.addr(), "UNLINK", "/never").status, 404);
    assert_eq!(list(&c.addr(), "/?list").0, Vec::<String>::new());
    assert_eq!(list(&c.addr(), "/?unlinked").0, ["/soft"]);
    for (i, path) in layout.files("/soft") {
        assert_eq!(std::fs::read(c.volumes[i].dir().join(&path)).unwrap(), b"old", "data kept on volume {i}");
    }

    assert_eq!(put(&c.addr(), "/soft", b"new").status, 201, "a PUT replaces an unlinked key");
    assert_eq!(get_follow(&c.addr(), "/soft").body, b"new");
    assert_eq!(list(&c.addr(), "/?unlinked").0, Vec::<String>::new());
    layout.assert_on_disk(&c, &["/soft"]); // the UNLINK marker went with the new PUT

    assert_eq!(method(&c.addr(), "UNLINK", "/soft").status, 204);
    assert_eq!(method(&c.addr(), "DELETE", "/soft").status, 204, "an unlinked key can be deleted");
    assert_eq!(list(&c.addr(), "/?unlinked").0, Vec::<String>::new());
    layout.assert_on_disk(&c, &[]); // data and marker gone
}

#[test]
fn protect_refuses_delete_until_unlinked() {
    let c = cluster(3, &["-protect"]);
    assert_eq!(put(&c.addr(), "/guarded", b"safe").status, 201);
    assert_eq!(method(&c.addr(), "DELETE", "/guarded").status, 403);
    assert_eq!(get_follow(&c.addr(), "/guarded").body, b"safe");

    assert_eq!(method(&c.addr(), "UNLINK", "/guarded").status, 204);
    assert_eq!(method(&c.addr(), "DELETE", "/guarded").status, 204);
    assert_eq!(get(&c.addr(), "/guarded").status, 404);
    assert_eq!(list(&c.addr(), "/?unlinked").0, Vec::<String>::new());
    assert!(c.volumes.iter().all(|v| v.files().is_empty()), "replicas left after DELETE");
    assert_eq!(method(&c.addr(), "DELETE", "/guarded").status, 404);
}

#[test]
fn fallback_redirects_missing_and_unlinked_keys() {
    let c = cluster(3, &["-fallback", "127.0.0.1:9"]);
    let r = get(&c.addr(), "/elsewhere/key");
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(r.header("location"), Some("http://127.0.0.1:9/elsewhere/key"));

    assert_eq!(put(&c.addr(), "/here", b"x").status, 201);
    assert!(get(&c.addr(), "/here").header("location").unwrap().ends_with(&key_path("/here")));
    assert_eq!(method(&c.addr(), "UNLINK", "/here").status, 204);
    assert_eq!(get(&c.addr(), "/here").header("location"), Some("http://127.0.0.1:9/here"));
}

#[test]
fn key_balance_says_unbalanced_when_the_volume_list_changed() {
    let mut c = cluster(3, &["-replicas", "1", "-subvolumes", "1"]);
    let two: Vec<String> = c.volumes[..2].iter().map(Volume::addr).collect();
    c.master.restart_with(&two, &["-threads", "2", "-replicas", "1", "-subvolumes", "1"]);
    let old = Layout { volumes: two, replicas: 1, subvolumes: 1 };
    let keys: Vec<String> = (0..30).map(|i| format!("/moving-{i}")).collect();
    for key in &keys {
        assert_eq!(put(&c.addr(), key, key.as_bytes()).status, 201);
    }

    let all: Vec<String> = c.volumes.iter().map(Volume::addr).collect();
    c.master.restart_with(&all, &["-threads", "2", "-replicas", "1", "-subvolumes", "1"]);
    let new = Layout::of(&c, 1, 1);
    let moved = keys.iter().filter(|k| new.replicas(k) != old.replicas(k)).count();
    assert!(moved > 0, "no key would move: pick more keys");
    for key in &keys {
        let r = get(&c.addr(), key);
        let balanced = if new.replicas(key) == old.replicas(key) { "balanced" } else { "unbalanced" };
        assert_eq!(r.header("key-balance"), Some(balanced), "{key}: {r:?}");
        assert_eq!(r.header("key-volumes"), Some(old.replicas(key)[0].as_str()), "stored replicas, not placement");
        assert_eq!(get_follow(&c.addr(), key).body, key.as_bytes());
    }
}

// ---- listings ------------------------------------------------------------------------

/// A listing's `next` passed back as form encoders write a query value (Python's
/// `requests`, Go's `url.Values`: a space as `+`, a `+` as `%2B`) pages through every key.
/// A `+` was taken as itself, so a page began past the keys holding a space, unseen.
#[test]
fn list_start_takes_a_plus_as_a_space_as_form_encoders_send_it() {
    let c = cluster(3, &["-replicas", "1"]);
    let a = c.addr();
    let keys = strings(&["/pg/a b", "/pg/a c", "/pg/a+c", "/pg/a d"]);
    for key in &keys {
        assert_eq!(put(&a, &key.replace(' ', "%20").replace('+', "%2B"), b"v").status, 201);
    }
    let form = |v: &str| v.replace('%', "%25").replace('+', "%2B").replace(' ', "+");
    let (mut seen, mut next) = (Vec::new(), String::new());
    loop {
        let path = format!(
            "/pg/?list&limit=1{}",
            if next.is_empty() { String::new() } else { format!("&start={}", form(&next)) }
        );
        let (page, after) = list(&a, &path);
        assert!(page.len() <= 1, "{path}: {page:?}");
        seen.extend(page);
        if after.is_empty() {
            break;
        }
        next = after;
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    // a limit past any count is no limit, not a 400
    assert_eq!(list(&a, "/pg/?list&limit=18446744073709551616").0, sorted);
}

#[test]
fn list_pages_through_a_prefix_in_byte_order() {
    let c = cluster(3, &["-replicas", "1"]);
    for key in ["/p/b", "/p/a", "/p/B", "/p/caf\u{e9}", "/p/c", "/q/a", "/pz"] {
        assert_eq!(put(&c.addr(), &key.replace('\u{e9}', "%C3%A9"), b"v").status, 201);
    }
    let a = c.addr();
    let all = strings(&["/p/B", "/p/a", "/p/b", "/p/c", "/p/caf\u{e9}"]);
    assert_eq!(list(&a, "/p/?list"), (all.clone(), String::new()));
    assert_eq!(list(&a, "/p/?list&limit=0"), (all.clone(), String::new()));
    assert_eq!(list(&a, "/p/?list&limit=5"), (all.clone(), String::new()), "nothing was cut");
    assert_eq!(list(&a, "/p/?list&limit=2"), (all[..2].to_vec(), "/p/b".into()));
    assert_eq!(list(&a, "/p/?list&start=/p/b&limit=2"), (all[2..4].to_vec(), "/p/caf\u{e9}".into()));
    assert_eq!(list(&a, "/p/?list&start=%2Fp%2Fcaf%C3%A9&limit=2"), (all[4..].to_vec(), String::new()));
    assert_eq!(list(&a, "/p/?list&start=/p/bb"), (all[3..].to_vec(), String::new()), "start need not exist");
    assert_eq!(list(&a, "/p?list").0.len(), 6, "/pz shares the prefix /p");
    assert_eq!(list(&a, "/?list").0.len(), 7);
    assert_eq!(list(&a, "/nothing?list"), (vec![], String::new()));

    let r = request(&a, "LIST", "/p/?list&limit=2", &[], b"");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["keys"], serde_json::json!(["/p/B", "/p/a"]));

    for bad in ["-1", "abc", "1.5"] {
        let r = get(&a, &format!("/p/?list&limit={bad}"));
        assert_eq!(r.status, 400, "limit={bad}: {r:?}");
    }
}

#[test]
fn unlinked_lists_page_the_same_way() {
    let c = cluster(3, &["-replicas", "1"]);
    for i in 0..5 {
        let key = format!("/u/{i}");
        assert_eq!(put(&c.addr(), &key, b"v").status, 201);
        if i != 2 {
            assert_eq!(method(&c.addr(), "UNLINK", &key).status, 204);
        }
    }
    let a = c.addr();
    assert_eq!(list(&a, "/u/?unlinked"), (strings(&["/u/0", "/u/1", "/u/3", "/u/4"]), String::new()));
    assert_eq!(list(&a, "/u/?unlinked&limit=3"), (strings(&["/u/0", "/u/1", "/u/3"]), "/u/4".into()));
    assert_eq!(list(&a, "/u/?unlinked&start=/u/4&limit=3"), (strings(&["/u/4"]), String::new()));
    assert_eq!(list(&a, "/u/?list"), (strings(&["/u/2"]), String::new()));
    assert_eq!(get(&a, "/u/?unlinked&limit=-1").status, 400);
}

// ---- the connection ------------------------------------------------------------------

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let c = cluster(3, &["-replicas", "1", "-subvolumes", "1"]);
    let layout = Layout::of(&c, 1, 1);
    let mut client = Client::connect(&c.addr());
    assert_eq!(client.request("PUT", "/k1", &[], b"one").status, 201);
    assert_eq!(client.request("PUT", "/k2", &[], b"two").status, 201);

    let mut burst = encode_request("GET", "/k1", &[], b"");
    burst.extend(encode_request("GET", "/missing", &[], b""));
    burst.extend(encode_request("HEAD", "/k2", &[], b""));
    burst.extend(encode_request("PUT", "/k3", &[], b"three"));
    burst.extend(encode_request("GET", "/k3", &[], b""));
    client.send(&burst);
    let location = |k: &str| format!("http://{}{}", layout.replicas(k)[0], key_path(k));
    let r = client.read_response("GET");
    assert_eq!((r.status, r.header("location")), (302, Some(location("/k1").as_str())));
    assert_eq!(client.read_response("GET").status, 404);
    let r = client.read_response("HEAD");
    assert_eq!((r.status, r.header("location")), (302, Some(location("/k2").as_str())));
    assert_eq!(client.read_response("PUT").status, 201);
    let r = client.read_response("GET");
    assert_eq!((r.status, r.header("location")), (302, Some(location("/k3").as_str())));
    assert_eq!(client.request("GET", "/k2", &[], b"").status, 302, "still open");
}

#[test]
fn http10_gets_its_answer_and_a_close() {
    let c = cluster(3, &[]);
    assert_eq!(put(&c.addr(), "/old", b"x").status, 201);
    let r = raw(&c.addr(), b"GET /old HTTP/1.0\r\n\r\n", TIMEOUT);
    assert!(r.closed, "HTTP/1.0 must close: {}", r.text());
    assert_eq!(r.status(), Some(302), "{}", r.text());
    let mut client = Client::connect(&c.addr());
    assert_eq!(client.request("GET", "/old", &[("Connection", "close")], b"").status, 302);
    assert!(client.closed_within(TIMEOUT), "Connection: close must close");
}

#[test]
fn malformed_requests_get_a_4xx_and_others_are_still_served() {
    let c = cluster(3, &["-max-body", "1000"]);
    let a = c.addr();
    assert_eq!(put(&a, "/fine", b"ok").status, 201);
    let mut bystander = Client::connect(&a);
    assert_eq!(bystander.request("GET", "/fine", &[], b"").status, 302);
    let quiet = Duration::from_secs(3);

    let r = raw(&a, b"this is not http\r\n\r\n", quiet);
    assert_eq!((r.status(), r.closed), (Some(400), true), "garbage: {}", r.text());
    let r = raw(&a, b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_millis(500));
    assert_eq!(r.status(), Some(405), "{}", r.text());
    assert!(r.text().contains("\r\nAllow: GET, HEAD, PUT, DELETE, UNLINK"), "a 405 says what is allowed: {}", r.text());

    let huge = format!("GET /fine HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(100 * 1024));
    let r = raw(&a, huge.as_bytes(), quiet);
    assert!(r.status() == Some(431) || (r.bytes.is_empty() && r.closed), "100 KiB header: {}", r.text());
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(9000));
    let r = raw(&a, long_uri.as_bytes(), quiet);
    assert_eq!(r.status(), Some(414), "9000-byte URI: {}", r.text());

    for cl in ["-1", "abc", "1 2"] {
        let req = format!("PUT /badlen HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\nxx");
        let r = raw(&a, req.as_bytes(), quiet);
        assert_eq!((r.status(), r.closed), (Some(400), true), "Content-Length: {cl}: {}", r.text());
    }
    let bad_chunks = b"PUT /badchunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";
    let r = raw(&a, bad_chunks, quiet);
    assert_eq!((r.status(), r.closed), (Some(400), true), "bad chunk size: {}", r.text());
    // an expectation other than 100-continue cannot be met: 417 (RFC 9110), nothing stored
    let r = raw(&a, b"PUT /expects HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\nhi", quiet);
    assert_eq!(r.status(), Some(417), "Expect: 200-ok: {}", r.text());

    let r = request(&a, "PUT", "/toobig", &[], &[b'x'; 1001]);
    assert_eq!(r.status, 413, "{r:?}");
    let chunked = [&b"3e9\r\n"[..], &[b'x'; 1001], b"\r\n0\r\n\r\n"].concat();
    let r = request(&a, "PUT", "/toobig", &[("Transfer-Encoding", "chunked")], &chunked);
    assert_eq!(r.status, 413, "chunked over -max-body: {r:?}");
    assert_eq!(put(&a, "/justfits", &[b'x'; 1000]).status, 201);

    let mut s = std::net::TcpStream::connect(&a).unwrap();
    std::io::Write::write_all(&mut s, b"PUT /truncated HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly fifty bytes..................................").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let r = read_raw(&mut s, quiet);
    assert!(r.closed, "truncated body: {}", r.text());
    assert!(r.bytes.is_empty() || r.status().is_some_and(|s| (400..500).contains(&s)), "{}", r.text());

    assert_eq!(bystander.request("GET", "/fine", &[], b"").status, 302, "bystander starved");
    assert_eq!(list(&a, "/?list").0, strings(&["/fine", "/justfits"]), "a malformed PUT stored something");
    wait_until("no orphan of a malformed PUT", TIMEOUT, || list(&a, "/?unlinked").0.is_empty());
}

/// Bytes no request line starts with and no line end (a TLS hello to the plain port, binary
/// junk) are a `400` at once: they waited for -header-timeout (10 s), then got a `408`.
#[test]
fn junk_that_cannot_start_a_request_is_400_at_once() {
    let c = cluster(3, &[]);
    let a = c.addr();
    let tls_hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03";
    for junk in [&tls_hello[..], b"\x00\x01\x02\x03 garbage", b"GE(T / HTTP/1.1", b"\r\n\x80"] {
        let started = Instant::now();
        let r = raw(&a, junk, Duration::from_secs(5));
        assert_eq!((r.status(), r.closed), (Some(400), true), "{junk:?}: {}", r.text());
        assert!(started.elapsed() < Duration::from_secs(2), "{junk:?}: after {:?}", started.elapsed());
    }
    // what may still become a request waits for the rest of its head
    let mut s = std::net::TcpStream::connect(&a).unwrap();
    s.write_all(b"\r\nGET /nothing HTT").unwrap();
    thread::sleep(Duration::from_millis(300));
    s.write_all(b"P/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(read_raw(&mut s, Duration::from_secs(5)).status(), Some(404));
}

#[test]
fn slow_and_idle_clients_are_cut_off_by_the_timeouts() {
    let c = cluster(3, &["-header-timeout", "1s", "-idle-timeout", "1s", "-body-timeout", "1s"]);
    let a = c.addr();
    assert_eq!(put(&a, "/t", b"x").status, 201);

    // a head that never ends
    let started = Instant::now();
    let r = raw(&a, b"GET /t HTTP/1.1\r\nHost: x\r\n", Duration::from_secs(10));
    assert_eq!((r.status(), r.closed), (Some(408), true), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(8), "408 only after {:?}", started.elapsed());

    // one byte every 200 ms: each byte is progress, but the whole head is late
    let slow = b"GET /t HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n\r\n";
    let mut s = std::net::TcpStream::connect(&a).unwrap();
    let mut sent = 0;
    while sent < slow.len() {
        if std::io::Write::write_all(&mut s, &slow[sent..sent + 1]).is_err() {
            break;
        }
        sent += 1;
        thread::sleep(Duration::from_millis(200));
        s.set_nonblocking(true).unwrap();
        let answered = s.peek(&mut [0u8; 1]).map_or_else(|e| e.kind() != std::io::ErrorKind::WouldBlock, |_| true);
        s.set_nonblocking(false).unwrap();
        if answered {
            break;
        }
        assert_eq!(get(&a, "/t").status, 302, "others are served meanwhile");
    }
    assert!(sent < slow.len(), "the server waited for an 8-second request head");
    let r = read_raw(&mut s, Duration::from_secs(5));
    assert!(r.closed && (r.bytes.is_empty() || r.status() == Some(408)), "{}", r.text());

    // an idle keep-alive connection
    let mut idle = Client::connect(&a);
    assert_eq!(idle.request("GET", "/t", &[], b"").status, 302);
    assert!(idle.closed_within(Duration::from_secs(5)), "idle connection kept open");

    // a body that stops coming
    let mut s = std::net::TcpStream::connect(&a).unwrap();
    std::io::Write::write_all(&mut s, b"PUT /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten..")
        .unwrap();
    let r = read_raw(&mut s, Duration::from_secs(5));
    assert!(r.closed && (r.bytes.is_empty() || r.status() == Some(408)), "{}", r.text());
    assert_eq!(get(&a, "/stalled").status, 404);
    assert_eq!(list(&a, "/?list").0, ["/t"]);
}

#[test]
fn answers_follow_every_write_of_a_key_on_every_thread() {
    // each thread caches GET answers: none may outlive a write made through another thread
    let c = cluster(3, &["-replicas", "2"]);
    let addr = c.addr();
    let mut conns: Vec<Client> = (0..4).map(|_| Client::connect(&addr)).collect();
    for round in 0..40 {
        let body = format!("round {round}").into_bytes();
        assert_eq!(put(&addr, "/hot", &body).status, 201);
        for conn in conns.iter_mut() {
            let r = conn.request("GET", "/hot", &[], b"");
            assert_eq!(r.status, 302, "round {round}");
            assert_eq!(r.header("content-md5"), Some(hex(&md5(&body)).as_str()), "round {round}: a stale answer");
        }
        let gone = if round % 2 == 0 { "UNLINK" } else { "DELETE" };
        assert_eq!(method(&addr, gone, "/hot").status, 204);
        for conn in conns.iter_mut() {
            assert_eq!(conn.request("GET", "/hot", &[], b"").status, 404, "round {round}: {gone} not seen");
        }
    }
}

#[test]
fn keys_whose_file_name_would_end_in_a_slash_are_refused_with_400() {
    // base64("/??") is "Lz8/": nginx cannot store a file under a name ending in '/'
    let c = cluster(3, &["-replicas", "2"]);
    let addr = c.addr();
    let r = put(&addr, "/%3F%3F", b"x");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.text().contains("end in '/'"), "{}", r.text());
    assert_eq!(get(&addr, "/%3F%3F").status, 404);
    assert_eq!(list(&addr, "/?unlinked").0, Vec::<String>::new());
    assert_eq!(put(&addr, "/%3F%3F%3F", b"x").status, 201, "a neighbour key is fine");
}

/// A client that writes its whole body before it reads (Python's `http.client`): a PUT of a
/// live key is answered `403` at once, and the master closed with the body unread, so the
/// client saw its writes reset and never read the `403`. The master now shuts its side and
/// reads on until the body is in; the client gets the answer.
/// The same for a `Content-Length` over `-max-body`, refused from the head alone (`413`).
#[test]
fn an_early_answer_reaches_a_client_that_sends_its_whole_body_first() {
    use std::io::{Read, Write};
    let c = cluster(3, &["-max-body", "67108864"]);
    assert_eq!(put(&c.addr(), "/early/live", b"here").status, 201);
    for (key, len, status) in [("/early/live", 32 << 20, "403"), ("/early/huge", 65 << 20, "413")] {
        let body = vec![b'x'; len];
        let mut s = std::net::TcpStream::connect(c.addr()).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let head = format!("PUT {key} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap_or_else(|e| panic!("{key}: the body written whole, not reset: {e}"));
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap_or_else(|e| panic!("{key}: the answer read, not reset: {e}"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{key}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{key}: {answer}");
    }
}

/// An early answer to a small body keeps the connection, chunked or not, as the README
/// says: the rest (≤ 64 KiB) is read and dropped and the next request answered. A chunked
/// one closed the connection, and a pipelined request after it went unanswered. A chunked
/// body over 64 KiB still closes it (its end is not known before it is read).
#[test]
fn an_early_answer_to_a_small_chunked_body_keeps_the_connection() {
    use std::io::{Read, Write};
    let c = cluster(3, &[]);
    assert_eq!(put(&c.addr(), "/early/live", b"here").status, 201);
    let big = format!("10000\r\n{}\r\n10000\r\n{}\r\n", "y".repeat(1 << 16), "y".repeat(1 << 16));
    for (chunks, kept) in [("5\r\nhello\r\n6;x=y\r\n world\r\n".to_string(), true), (big, false)] {
        let mut s = std::net::TcpStream::connect(c.addr()).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let req = format!(
            "PUT /early/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}0\r\n\r\n\
             GET /early/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        let second = answer.matches("HTTP/1.1 ").count() == 2 && answer.contains("HTTP/1.1 302");
        assert_eq!(second, kept, "kept {kept}: {answer}");
    }
    // a body still coming does not hold the answer back
    let mut s = std::net::TcpStream::connect(c.addr()).unwrap();
    s.write_all(b"PUT /early/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("the early answer while the body is still coming");
    assert_eq!(&head, b"HTTP/1.1 403");
}

/// A connection reading on after an early answer ([`an_early_answer_reaches_a_client_that_sends_its_whole_body_first`])
/// is idle to a stop: SIGTERM closes it at once, not after its 10 s (nor -drain's).
#[test]
fn a_stop_does_not_wait_for_a_connection_reading_on_after_an_early_answer() {
    use std::io::{Read, Write};
    let mut c = cluster(3, &[]);
    assert_eq!(put(&c.addr(), "/early/live", b"here").status, 201);
    let mut s = std::net::TcpStream::connect(c.addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"PUT /early/live HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n").unwrap();
    s.write_all(&vec![b'x'; 2 << 20]).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 403");
    // the body trickles on, so the master reads on
    let trickle = thread::spawn(move || {
        for _ in 0..40 {
            if s.write_all(&[b'x'; 1024]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(250));
        }
    });
    let began = Instant::now();
    let status = c.master.terminate(Duration::from_secs(20)).expect("the master stops");
    assert!(status.success(), "{status:?}");
    assert!(began.elapsed() < Duration::from_secs(5), "the stop took {:?}", began.elapsed());
    trickle.join().unwrap();
}

/// A client that hangs up half way through a body leaves no file on any volume (nginx
/// keeps no partial body), and the master's clean-up does not fill the volumes' error logs:
/// it sent a DELETE of each file that was never made, which nginx logs as an error
/// (`lstat() ... failed (2: No such file or directory)`), one line per replica for every
/// dropped upload (a soak saw 1,124 a volume). Native PUTs, S3 overwrites (written beside
/// the old value) and S3 parts alike.
#[test]
fn a_client_hanging_up_mid_body_leaves_no_error_in_the_volumes_logs() {
    let c = Cluster::new(3, &["-replicas", "3"]);
    let addr = c.addr();
    const S3: &str = "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n";
    let r = request(&addr, "PUT", "/hang/over", &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")], b"old");
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(&addr, "POST", "/hang/part?uploads", &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")], b"");
    let text = r.text();
    let id = text.split("<UploadId>").nth(1).and_then(|t| t.split("</UploadId>").next()).expect("an upload id");
    let part = format!("/hang/part?partNumber=1&uploadId={id}");
    // well into the body, past any first piece the master reads before it sends anything on
    for (path, extra) in [("/hang/native", ""), ("/hang/over", S3), (part.as_str(), S3)] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let head = format!("PUT {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: 3000000\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&vec![b'x'; 1_500_000]).unwrap();
        thread::sleep(Duration::from_millis(300));
    }
    wait_until("the cut writes cleaned up", Duration::from_secs(10), || {
        get(&addr, "/?unlinked").text() == r#"{"next":"","keys":[]}"# && get(&addr, "/?pending").text().contains("[]")
    });
    thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&addr, "/hang/native").status, 404);
    let r = request(&addr, "GET", "/hang/over", &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")], b"");
    assert_eq!(r.body, b"old", "the old value stays");
    for v in &c.volumes {
        assert_eq!(nginx_errors(v), Vec::<String>::new(), "volume {}", v.addr());
    }
}

/// The `[error]` lines of a volume's nginx log.
fn nginx_errors(v: &Volume) -> Vec<String> {
    let log = std::fs::read_to_string(v.dir().join(".nginx/error.log")).unwrap_or_default();
    log.lines().filter(|l| l.contains("[error]")).map(str::to_string).collect()
}

/// The same while a volume is stopped: the master retries the clean-up of a failed write
/// (and of a failed UNLINK's markers) every second until the volume is back, and each retry
/// sent the other volumes a DELETE of every file, gone since the first (and re-wrote the
/// unlink markers it had just deleted): an `[error]` line a second on each of them for as
/// long as the outage lasted.
#[test]
fn the_retries_of_a_failed_writes_clean_up_leave_no_error_in_the_volumes_logs() {
    let c = Cluster::new(3, &["-replicas", "3", "-voltimeout", "500ms"]);
    let addr = c.addr();
    let s3 = [("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    assert_eq!(request(&addr, "PUT", "/retry/over", &s3, b"old").status, 200);
    assert_eq!(request(&addr, "PUT", "/retry/unlinked", &[], b"v").status, 201);
    c.volumes[2].pause();
    let r = request(&addr, "PUT", "/retry/native", &[], b"never whole");
    assert!((500..600).contains(&r.status), "{r:?}");
    let r = request(&addr, "PUT", "/retry/over", &s3, b"new");
    assert!((500..600).contains(&r.status), "{r:?}");
    let r = request(&addr, "UNLINK", "/retry/unlinked", &[], b"");
    assert!((500..600).contains(&r.status), "{r:?}");
    // several rounds of retries while the volume is stopped
    thread::sleep(Duration::from_secs(4));
    c.volumes[2].resume();
    wait_until("the failed writes cleaned up", Duration::from_secs(20), || {
        get(&addr, "/?unlinked").text() == r#"{"next":"","keys":[]}"# && get(&addr, "/?pending").text().contains("[]")
    });
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(&addr, "/retry/native").status, 404);
    assert_eq!(request(&addr, "GET", "/retry/over", &s3, b"").body, b"old");
    assert_eq!(request(&addr, "HEAD", "/retry/unlinked", &[], b"").status, 302, "still live");
    for v in &c.volumes[..2] {
        let errors = nginx_errors(v);
        assert!(errors.is_empty(), "volume {}: {} error lines: {errors:#?}", v.addr(), errors.len());
    }
}

/// While a volume a failed write's clean-up needs is down, the clean-up waits for it and
/// asks nothing of the others: it was retried once a second for the whole outage, a
/// `HEAD` to every other replica of every such key each time (load in proportion to the
/// failed keys, for nothing: the key cannot be ended before the volume is back).
#[test]
fn the_clean_up_of_a_failed_write_waits_for_its_volume_quietly() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let vols: Vec<Volume> = (0..3).map(|_| Volume::new()).collect();
    let asked = Arc::new(AtomicUsize::new(0));
    let fronts: Vec<String> = vols
        .iter()
        .map(|v| {
            let asked = asked.clone();
            proxy(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), v.addr(), 64 << 10, move |sent| {
                // a file's HEAD, not the prober's `HEAD /`
                if sent.starts_with(b"HEAD /") && !sent.starts_with(b"HEAD / ") {
                    asked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let master = Master::start_on(&fronts, &["-replicas", "3", "-subvolumes", "1", "-voltimeout", "500ms"]);
    let addr = master.addr();
    let s3 = [("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    assert_eq!(request(&addr, "PUT", "/quiet/over", &s3, b"old").status, 200);
    assert_eq!(request(&addr, "PUT", "/quiet/linked", &[], b"live").status, 201);
    // an S3 upload with a part, aborted below while the volume is down: its part files wait
    let r = request(&addr, "POST", "/quiet/mp?uploads", &s3, b"");
    let text = r.text();
    let id = text.split("<UploadId>").nth(1).and_then(|t| t.split("</UploadId>").next()).expect(&text).to_string();
    let r = request(&addr, "PUT", &format!("/quiet/mp?partNumber=1&uploadId={id}"), &s3, b"a part");
    assert_eq!(r.status, 200, "{r:?}");
    vols[2].pause();
    let r = request(&addr, "PUT", "/quiet/native", &[], b"never whole");
    assert!((500..600).contains(&r.status), "{r:?}");
    let r = request(&addr, "PUT", "/quiet/over", &s3, b"new");
    assert!((500..600).contains(&r.status), "{r:?}");
    // markers left beside a live key
    let r = request(&addr, "UNLINK", "/quiet/linked", &[], b"");
    assert!((500..600).contains(&r.status), "{r:?}");
    let r = request(&addr, "DELETE", &format!("/quiet/mp?uploadId={id}"), &s3, b"");
    assert_eq!(r.status, 204, "{r:?}");
    wait_until("the volume to be found down", Duration::from_secs(5), || {
        master.lines().iter().any(|l| l.contains("is down"))
    });
    thread::sleep(Duration::from_millis(200));
    asked.store(0, Ordering::Relaxed);
    thread::sleep(Duration::from_secs(3));
    let during = asked.load(Ordering::Relaxed);
    vols[2].resume();
    assert_eq!(during, 0, "files asked for on the other volumes while one was down");
    wait_until("the failed writes cleaned up once it is back", Duration::from_secs(20), || {
        get(&addr, "/?unlinked").text() == r#"{"next":"","keys":[]}"# && get(&addr, "/?pending").text().contains("[]")
    });
    assert_eq!(get(&addr, "/quiet/native").status, 404);
    assert_eq!(request(&addr, "GET", "/quiet/over", &s3, b"").body, b"old");
    assert_eq!(request(&addr, "HEAD", "/quiet/linked", &[], b"").status, 302, "still live");
    wait_until("the part files and the stray markers gone", Duration::from_secs(20), || {
        vols.iter().all(|v| v.files().iter().all(|f| !f.contains("_parts/") && !f.contains("_unlinked/")))
    });
}
