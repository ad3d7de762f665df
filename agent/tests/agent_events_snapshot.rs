//! Insta snapshots (snapshots/agent_events__*.snap) of the agent events `hubble-agent run
//! --lab fixtures/lab/mini.toml` records (the lab source's changes applied by the node model,
//! as in the live agent, with a fake datapath and fixed times), as `hubble observe
//! agent-events` prints them: the field contents show up in review.

use std::time::{Duration, SystemTime};

use agent::lab::spec::LabSpec;
use agent::model::{NoMaps, NodeMaps, NodeModel};
use agent::observer::events::{self, AgentEvents};
use hubble::printer::{OutputFormat, Printer, PrinterOptions, TimeFormat};
use hubble_api::observer::GetAgentEventsRequest;

fn recorded() -> Vec<hubble_api::observer::GetAgentEventsResponse> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/lab/mini.toml");
    let spec = LabSpec::load(&path).unwrap();
    let mut model = NodeModel::new();
    let maps: &mut dyn NodeMaps = &mut NoMaps;
    let up = model
        .apply(agent::sources::lab::changes(&spec, &spec.lab.node), maps)
        .events;
    let down = model.detach_all(maps).events;
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let store = AgentEvents::new(model.state().node_name());
    store.push_at(events::agent_started(t0), t0);
    for (i, e) in up.into_iter().chain(down).enumerate() {
        store.push_at(e, t0 + Duration::from_millis(10 * (i as u64 + 1)));
    }
    let mut q = store
        .query(&GetAgentEventsRequest {
            first: true,
            ..Default::default()
        })
        .unwrap();
    std::iter::from_fn(|| store.next_now(&mut q))
        .map(|e| (*e).clone())
        .collect()
}

#[test]
fn mini_lab_agent_events() {
    let events = recorded();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for (mode, format) in [
            ("compact", OutputFormat::Compact),
            ("json", OutputFormat::Json),
        ] {
            let mut p = Printer::new(
                Vec::new(),
                PrinterOptions {
                    format,
                    time_format: TimeFormat::default(),
                    node_name: true,
                    ..Default::default()
                },
            );
            for e in &events {
                p.write_agent_event(e).unwrap();
            }
            p.finish().unwrap();
            let out = String::from_utf8(p.into_inner()).unwrap();
            insta::assert_snapshot!(format!("agent_events__mini_{mode}"), out);
        }
    });
}
