"""Standard SQS queues whose calls do not walk every message: moto's SQS with an index.

moto keeps a queue's messages in one list (`Queue._messages`) and answers calls by walking it.
ReceiveMessage builds the list of every visible, non-delayed message (two clock reads each) to
take ten, then checks each message it takes against the retention period by computing every
queue attribute, three of which (ApproximateNumberOf*) walk the list again. DeleteMessage walks
it twice, building each message's list of receipt handles; ChangeMessageVisibility walks it;
SendMessage computes every queue attribute too. At 10,000 messages a receive and its delete
cost seconds, and a chaos soak of that size moves a message or two per second.

`install()` gives each standard queue an index next to that list: receipt handle -> message
(every handle a message has had), and three heaps of the messages: receivable (by arrival), in
flight (by the end of the visibility timeout), delayed (by the end of the delay). Receive,
delete, change of visibility, the long poll's wake-up test and the three counts (so SendMessage
and GetQueueAttributes too) then cost O(log depth), plus the list's C-level `remove` on delete.
The list stays moto's: moto's `add_message` appends to it, and the index takes the new messages
in at its next use; messages leave it only here, or all at once when PurgeQueue replaces it.

What a client sees does not change: moto's order (oldest receivable first); a receive sets the
visibility timeout and counts ApproximateReceiveCount, or moves a message that has reached
maxReceiveCount to the dead-letter queue, as moto does; any receipt handle a message ever had
deletes it or changes its visibility; a deleted message's handle is accepted again and ignored;
an unknown one is ReceiptHandleIsInvalid; a long poll wakes when a message arrives. One
difference: a received message is copied shallowly, not deep-copied; only the response reads
the copy. FIFO queues keep moto's code entirely.

Every use of an index happens under its queue's `_messages_lock`, the lock moto's `add_message`
appends under and long polls wait on.
"""

import copy
import heapq
import itertools

import moto

from moto.core.utils import unix_time, unix_time_millis
from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid
from moto.sqs.models import Queue, SQSBackend, _filter_message_attributes

MOTO_VERSION = "5.2.5"
READY, IN_FLIGHT, DELAYED = "ready", "in_flight", "delayed"

# A message's arrival in its queue: moto's list order, which receives follow.
_arrivals = itertools.count()


class _Index:
    """A standard queue's message list, arranged so that no call walks it.

    Each message of the list has one live entry in one of three heaps: READY (receivable, by
    arrival), IN_FLIGHT (by the end of its visibility timeout) or DELAYED (by the end of its
    delay). An entry that goes out of date stays in its heap and is dropped at the top.
    """

    def __init__(self, messages):
        self.messages = messages  # the list described (moto's PurgeQueue replaces it)
        self.known = 0  # its first `known` messages are indexed; later ones were appended since
        self.by_handle = {}  # every receipt handle a message has had -> the message
        self.slot = {}  # message -> (its live entry, its heap's kind)
        self.heaps = {READY: [], IN_FLIGHT: [], DELAYED: []}
        self.counts = dict.fromkeys(self.heaps, 0)

    def add(self, message):
        for handle in message.all_receipt_handles:
            if handle is not None:
                self.by_handle[handle] = message
        self.place(message)

    def remove(self, message):
        _, kind = self.slot.pop(message)
        self.counts[kind] -= 1
        for handle in message.all_receipt_handles:
            self.by_handle.pop(handle, None)
        self.messages.remove(message)
        self.known -= 1

    def place(self, message, now=None):
        """Files the message by its visibility and delay (after moto changed them)."""
        now = unix_time_millis() if now is None else now
        # moto's Message.visible and Message.delayed, at one instant
        if not now > message.visible_at:
            kind, entry = IN_FLIGHT, (message.visible_at,)
        elif now < message.delayed_until:
            kind, entry = DELAYED, (message.delayed_until,)
        else:
            kind, entry = READY, ()
        old = self.slot.get(message)
        if old:
            self.counts[old[1]] -= 1
            arrival = old[0][-2]
        else:
            arrival = next(_arrivals)
        entry += (arrival, message)
        heapq.heappush(self.heaps[kind], entry)
        self.slot[message] = (entry, kind)
        self.counts[kind] += 1

    def _live(self, entry):
        slot = self.slot.get(entry[-1])
        return slot is not None and slot[0] is entry

    def promote(self):
        """Files again the messages whose visibility timeout or delay has ended."""
        now = unix_time_millis()
        in_flight, delayed = self.heaps[IN_FLIGHT], self.heaps[DELAYED]
        while in_flight and in_flight[0][0] < now:
            entry = heapq.heappop(in_flight)
            if self._live(entry):
                self.place(entry[-1], now)
        while delayed and delayed[0][0] <= now:
            entry = heapq.heappop(delayed)
            if self._live(entry):
                self.place(entry[-1], now)

    def pop_ready(self):
        """The receivable message that arrived first, or None. The caller files it again."""
        ready = self.heaps[READY]
        while ready:
            entry = heapq.heappop(ready)
            if self._live(entry):
                return entry[-1]
        return None


def _index(queue):
    """The queue's index, with the messages moto appended since its last use. Hold the lock."""
    index = queue.__dict__.get("_sqs_fast_index")
    messages = queue._messages
    if index is None or index.messages is not messages or index.known > len(messages):
        index = queue._sqs_fast_index = _Index(messages)
    for message in messages[index.known :]:
        index.add(message)
    index.known = len(messages)
    return index


def _counted(kind, with_scan):
    """A count property in place of moto's `with_scan`, which walks the list."""

    def count(queue):
        if queue.fifo_queue:
            return with_scan.fget(queue)
        with queue._messages_lock:
            index = _index(queue)
            index.promote()
            return index.counts[kind]

    return property(count)


def _take(queue, count, visibility_timeout, attribute_names):
    """One pass of moto's receive over the index: (copies to return, messages for the DLQ)."""
    index = _index(queue)
    index.promote()
    redrive = queue.redrive_policy if queue.dead_letter_queue is not None else None
    result, received, to_dlq = [], [], []
    while len(result) < count:
        message = index.pop_ready()
        if message is None:
            break
        queue.pending_messages.discard(message)
        if redrive and message.approximate_receive_count >= redrive["maxReceiveCount"]:
            index.remove(message)
            to_dlq.append(message)
            continue
        queue.pending_messages.add(message)
        message.mark_received(visibility_timeout=visibility_timeout)
        index.by_handle[message.receipt_handle] = message
        received.append(message)
        if queue.message_retention_period + message.sent_timestamp / 1000 <= unix_time():
            break  # as moto: past its retention, received but not returned, and the pass ends
        # Only the response reads the copy; the filter replaces its attributes dict, not theirs.
        returned = copy.copy(message)
        _filter_message_attributes(returned, attribute_names)
        result.append(returned)
    for message in received:
        index.place(message)  # after the pass, so a visibility timeout of 0 is not taken twice
    return result, to_dlq


def install():
    """Patches moto's SQS classes (once); serve.py calls it before serving."""
    if getattr(Queue, "_sqs_fast_installed", False):
        return
    # The index follows moto's private state (`_messages`, `pending_messages`, the receipt
    # handles): check it again before moving to another moto.
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"sqs_fast.py is written for moto {MOTO_VERSION}, this is moto {moto.__version__}"
        )
    Queue._sqs_fast_installed = True

    receive_message = SQSBackend.receive_message
    change_message_visibility = SQSBackend.change_message_visibility
    delete_message = Queue.delete_message
    wait_for_messages = Queue.wait_for_messages
    counts = {
        READY: _counted(READY, Queue.approximate_number_of_messages),
        IN_FLIGHT: _counted(IN_FLIGHT, Queue.approximate_number_of_messages_not_visible),
        DELAYED: _counted(DELAYED, Queue.approximate_number_of_messages_delayed),
    }

    def fast_receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout,
                             message_attribute_names=None):
        queue = self.get_queue(queue_name)
        if queue.fifo_queue:
            return receive_message(self, queue_name, count, wait_seconds_timeout,
                                   visibility_timeout, message_attribute_names)
        attribute_names = message_attribute_names or []
        polling_end = unix_time() + wait_seconds_timeout
        while True:  # moto's loop: one pass, then (long poll) wait up to 1 s for a message
            with queue._messages_lock:
                result, to_dlq = _take(queue, count, visibility_timeout, attribute_names)
            for message in to_dlq:
                queue.dead_letter_queue.add_message(message)
            if result or not wait_seconds_timeout:
                return result
            queue.wait_for_messages(1)
            if unix_time() > polling_end:
                return result

    def fast_delete_message(queue, receipt_handle):
        if queue.fifo_queue:
            return delete_message(queue, receipt_handle)
        with queue._messages_lock:
            if receipt_handle in queue.deleted_messages:
                return  # already deleted: moto accepts it again
            index = _index(queue)
            message = index.by_handle.get(receipt_handle)
            if message is None:
                raise ReceiptHandleIsInvalid()
            index.remove(message)
            queue.pending_messages.discard(message)
            queue.deleted_messages.update(message.all_receipt_handles)

    def fast_change_message_visibility(self, queue_name, receipt_handle, visibility_timeout):
        queue = self.get_queue(queue_name)
        if queue.fifo_queue:
            return change_message_visibility(
                self, queue_name, receipt_handle, visibility_timeout
            )
        with queue._messages_lock:
            index = _index(queue)
            message = index.by_handle.get(receipt_handle)
            if message is None:
                raise ReceiptHandleIsInvalid
            # moto's check and error, word for word
            visible_at = unix_time_millis() + int(visibility_timeout) * 1000
            if visible_at - message.sent_timestamp > 43200 * 1000:
                raise InvalidParameterValue(
                    f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. "
                    "Reason: Total VisibilityTimeout for the message is beyond the limit "
                    "[43200 seconds]"
                )
            message.change_visibility(visibility_timeout)
            if message.visible:
                queue.pending_messages.discard(message)
            index.place(message)

    def fast_wait_for_messages(queue, timeout):
        if queue.fifo_queue:
            return wait_for_messages(queue, timeout)
        with queue._messages_lock:
            queue._messages_lock.wait_for(
                lambda: queue.approximate_number_of_messages, timeout=timeout
            )

    SQSBackend.receive_message = fast_receive_message
    SQSBackend.change_message_visibility = fast_change_message_visibility
    Queue.delete_message = fast_delete_message
    Queue.wait_for_messages = fast_wait_for_messages
    Queue.approximate_number_of_messages = counts[READY]
    Queue.approximate_number_of_messages_not_visible = counts[IN_FLIGHT]
    Queue.approximate_number_of_messages_delayed = counts[DELAYED]
