//! What goes wrong: the failures a driver reports (checked against how the engine must take each), and the calls
//! no correct driver makes, which the engine must log as bugs and end with resets.

use smoltalk_core::proxy::engine::{
    AfterResponse, ConnectStep, Connected, Ending, Failure, HeadStep, Phase, ProxyConnection,
    ResponsePhase, ResponseStep,
};

use super::checks;
use super::phases::ADDRESSES;
use super::shadow::Shadow;
use super::Driver;

/// Whether `failure` can happen in `phase` (anything else is a driver's bug, which the engine must log and end with
/// resets): a client reset anywhere, a body's failures while the request is exchanged, a tunnel's peer reset in a
/// tunnel. (An origin that goes away is no failure: the driver reads on and the engine learns it from what came.)
pub fn fits(failure: Failure, phase: Phase) -> bool {
    let exchanging = matches!(phase, Phase::Exchanging(_));
    let body = matches!(
        phase,
        Phase::Exchanging(ResponsePhase::Body | ResponsePhase::Complete)
    );
    match failure {
        Failure::ClientReset => phase != Phase::Closed,
        Failure::ClientClosedMidBody | Failure::MalformedRequestBody => exchanging,
        Failure::MalformedResponseBody => body,
        Failure::TunnelPeerReset => phase == Phase::Tunnel,
    }
}

/// A failure of any kind, whatever the phase.
pub fn any_failure(byte: u8) -> Failure {
    match byte % 5 {
        0 => Failure::ClientReset,
        1 => Failure::ClientClosedMidBody,
        2 => Failure::MalformedRequestBody,
        3 => Failure::MalformedResponseBody,
        _ => Failure::TunnelPeerReset,
    }
}

impl Driver<'_, '_> {
    /// Reports a failure, and checks how the engine takes it.
    pub(super) fn fail(
        &mut self,
        conn: &mut ProxyConnection,
        st: &mut Shadow,
        failure: Failure,
    ) -> Option<Ending> {
        let phase = conn.phase();
        let started = st.exchange.as_ref().is_some_and(|e| e.started);
        let fits = fits(failure, phase);
        let bugs = checks::bugs();
        let ending = conn.on_failure(failure, &mut self.out);
        let answer = |status: u16| match started {
            true => Err(Ending::ResetBoth),
            false => Ok(status),
        };
        let expected = match failure {
            // Out of its phase: the driver's bug, logged, both connections reset.
            _ if !fits => Err(Ending::ResetBoth),
            Failure::ClientReset if phase == Phase::ReadingHead => Err(Ending::ResetBoth),
            Failure::ClientReset if !started => Err(Ending::ResetClient),
            Failure::ClientClosedMidBody => Err(Ending::ResetClient),
            Failure::MalformedRequestBody => answer(400),
            _ => Err(Ending::ResetBoth),
        };
        if let (Some(before), Some(after)) = (bugs, checks::bugs()) {
            let logged = after - before;
            assert_eq!(
                logged,
                u64::from(!fits),
                "{failure:?} in {phase:?}: {logged} bugs logged"
            );
        }
        match (expected, ending) {
            (Ok(status), Ending::Answer { len }) => {
                assert_eq!(checks::page(&self.out[..len]), status)
            }
            (Err(expected), ending) => assert_eq!(ending, expected, "{failure:?} in {phase:?}"),
            other => panic!("{failure:?} in {phase:?}: {other:?}"),
        }
        Some(ending)
    }

    /// A call the phase does not allow: a bug of the driver's, which the engine logs and ends with resets.
    pub(super) fn misuse(&mut self, conn: &mut ProxyConnection) -> Option<Ending> {
        let phase = conn.phase();
        let allowed = |call: u8| match call {
            0 => phase == Phase::ReadingHead,
            1 => phase == Phase::Resolving,
            2 | 3 => phase == Phase::Connecting,
            4 => phase == Phase::Exchanging(ResponsePhase::Head),
            5 => matches!(
                phase,
                Phase::Exchanging(ResponsePhase::Body | ResponsePhase::Complete)
            ),
            6 => phase == Phase::Exchanging(ResponsePhase::Complete),
            _ => phase == Phase::Tunnel,
        };
        let first = self.input.byte();
        let call = (0..8).map(|k| (first % 8 + k) % 8).find(|&c| !allowed(c))?;
        let bugs = checks::bugs();
        let ending = match call {
            0 => match conn.on_client_head(
                self.cx,
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                false,
                || true,
                self.now,
                &mut self.out,
            ) {
                HeadStep::End(ending) => ending,
                other => panic!("on_client_head in {phase:?}: {other:?}"),
            },
            1 => match conn.on_resolved(self.cx, Ok(&ADDRESSES[..1]), &mut self.out) {
                ConnectStep::End(ending) => ending,
                other => panic!("on_resolved in {phase:?}: {other:?}"),
            },
            2 => match conn.on_connect_failed(false, &mut self.out) {
                ConnectStep::End(ending) => ending,
                other => panic!("on_connect_failed in {phase:?}: {other:?}"),
            },
            3 => match conn.on_connected(self.cx, self.now, &mut self.out) {
                Connected::End(ending) => ending,
                other => panic!("on_connected in {phase:?}: {other:?}"),
            },
            4 => match conn.on_response_head(
                self.cx,
                b"HTTP/1.1 204 No\r\n\r\n",
                false,
                &mut [smoltalk_core::http::EMPTY_HEADER; 4],
                &mut self.out,
            ) {
                ResponseStep::End(ending) => ending,
                other => panic!("on_response_head in {phase:?}: {other:?}"),
            },
            5 => conn
                .on_origin_finished(false)
                .unwrap_or_else(|| panic!("on_origin_finished in {phase:?} went on")),
            6 => match conn.on_response_sent(self.cx, true, self.now) {
                AfterResponse::End(ending) => ending,
                other => panic!("on_response_sent in {phase:?}: {other:?}"),
            },
            _ => conn.on_tunnel_closed(),
        };
        assert_eq!(ending, Ending::ResetBoth, "call {call} in {phase:?}");
        assert_eq!(conn.phase(), Phase::Closed);
        if let (Some(before), Some(after)) = (bugs, checks::bugs()) {
            assert_eq!(after, before + 1, "call {call} in {phase:?} logged no bug");
        }
        self.outcome.misuses += 1;
        Some(ending)
    }
}
