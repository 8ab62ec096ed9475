from proxy.sse import SseParser, encode_event


def test_events_split_at_any_byte_boundary():
    stream = b'event: a\ndata: {"x": 1}\n\n: comment\n\ndata: line1\ndata: line2\n\r\ndata: [DONE]\r\n\r\n'
    for size in (1, 2, 3, 7, len(stream)):
        parser = SseParser()
        events = []
        for i in range(0, len(stream), size):
            events += parser.feed(stream[i : i + size])
        events += parser.close()
        assert [(e.event, e.data) for e in events] == [("a", '{"x": 1}'), (None, "line1\nline2"), (None, "[DONE]")]


def test_last_event_without_blank_line_counts_at_close():
    parser = SseParser()
    assert parser.feed(b"data: tail") == []
    assert [e.data for e in parser.close()] == ["tail"]


def test_encode_round_trips():
    parser = SseParser()
    assert [(e.event, e.data) for e in parser.feed(encode_event("{}", event="ping"))] == [("ping", "{}")]


def test_feed_data_gives_the_same_payloads_as_bytes_at_any_boundary():
    stream = (
        b'data: {"x": 1}\n\n: keep-alive\n\ndata: line1\ndata: line2\n\r\n'
        b"data:nospace\n\ndata: \xc3\xa9t\xc3\xa9\r\n\r\ndata: [DONE]\n\n"
    )
    for size in (1, 2, 5, len(stream)):
        parser = SseParser()
        payloads = []
        for i in range(0, len(stream), size):
            payloads += parser.feed_data(stream[i : i + size])
        assert payloads == [b'{"x": 1}', b"line1\nline2", b"nospace", "été".encode(), b"[DONE]"]
