//! The JSON front end of `hubble observe --input-file`: `source::parse_line` on any bytes.
//! No input may panic; what the lean parser (`source::fastjson`) accepts, serde_json must
//! parse to the same response; and a parsed response written as `-o json` reads back equal.
#![no_main]

use hubble::source::{fastjson, parse_line};
use hubble_api::json::ProtoJson;
use hubble_api::observer::GetFlowsResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(fast) = fastjson::from_str::<GetFlowsResponse>(text)
    {
        let slow: GetFlowsResponse = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("fastjson took {text:?}, serde_json refused it: {e}"));
        assert_eq!(fast, slow, "fastjson and serde_json differ on {text:?}");
    }
    let Ok(Some(resp)) = parse_line(1, data) else {
        return;
    };
    // Out-of-range timestamps have no JSON form.
    let Ok(json) = resp.to_json_vec() else {
        return;
    };
    match parse_line(1, &json) {
        Ok(Some(back)) => assert_eq!(back, resp, "{}", String::from_utf8_lossy(&json)),
        other => panic!(
            "-o json output {} does not read back: {other:?}",
            String::from_utf8_lossy(&json)
        ),
    }
});
