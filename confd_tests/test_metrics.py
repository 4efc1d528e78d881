"""Metrics: label cardinality stays bounded whatever FreeSWITCH or clients send."""

from confd.metrics import MAX_ACTION_LABELS, Metrics


def test_event_labels_are_bounded():
    m = Metrics()
    for i in range(MAX_ACTION_LABELS + 50):
        m.event("action-%d" % i)
    m.event("action-0")
    text = m.render()[0].decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("confd_esl_events_total{")]
    assert len(lines) == MAX_ACTION_LABELS + 1  # the first ones, plus "other"
    assert 'confd_esl_events_total{action="other"} 50.0' in text
    assert 'confd_esl_events_total{action="action-0"} 2.0' in text


def test_request_labels():
    m = Metrics()
    m.request("/v2/health", "GET", 200)
    m.request("/v2/health", "GET", 200)
    text = m.render()[0].decode()
    assert 'confd_http_requests_total{method="GET",route="/v2/health",status="200"} 2.0' in text


def test_made_up_methods_take_no_label_sets():
    """A client sending methods of its own invention cannot use up the label sets: a real 405
    after 1,000 of them is still counted under its own method."""
    m = Metrics()
    for i in range(1000):
        m.request("unmatched", "X-METHOD-%d" % i, 405)
    m.request("/v2/health", "POST", 405)
    m.request("/v2/health", "GET", 500)
    text = m.render()[0].decode()
    assert 'confd_http_requests_total{method="POST",route="/v2/health",status="405"} 1.0' in text
    assert 'confd_http_requests_total{method="GET",route="/v2/health",status="500"} 1.0' in text
    assert 'confd_http_requests_total{method="other",route="unmatched",status="405"} 1000.0' in text
    assert "X-METHOD" not in text
