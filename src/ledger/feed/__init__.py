"""The change feed (`GET /v1/events`) and webhook deliveries.

- index.py: the `feed` projection: which seller, order, account and marketplace each order event of the log
  belongs to (the seller is on an order's first event only), and the feed's reads;
- items.py: a feed item, decoded from the stored event as the order's history shows it (erased buyer fields
  read `[erased]`);
- urls.py: the SSRF guard for webhook URLs;
- webhooks.py: the one owner of the webhook tables (endpoints, their cursors, the delivery log);
- dispatcher.py: the delivery worker (signed POSTs, retries with backoff for 24 h, then dead);
- wakeup.py: wakes long polls and streams when the feed moves, from one LISTEN connection per process.
"""
