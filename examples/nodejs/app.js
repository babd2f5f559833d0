// Keyway example client (Node.js, ioredis): one endpoint, password from a file.
//
// Configuration, from the environment (the first that is set wins):
//   REDIS_URL            redis://:PASSWORD@10.0.0.10:6379/0
//   REDIS_HOST, REDIS_PORT (default 10.0.0.10, 6379), REDIS_DB (default 0) and
//   REDIS_PASSWORD_FILE  a file holding the password (Docker / Kubernetes secret)
//   REDIS_USERNAME       optional ACL user
//
// Never point it at a Redis node: the endpoint is the load balancer, and Keyway
// sends every connection to the current master.
//
//   npm install && node app.js     PING, SET/GET/DEL of a unique key; prints OK
'use strict';

const fs = require('node:fs');
const crypto = require('node:crypto');
const Redis = require('ioredis');

// Ride through a failover: Keyway holds new connections while there is no
// master (timeouts.hold, 10 s in production) and closes the connections to the
// old master when the route moves. ioredis reconnects by itself and, with
// these settings, replays the commands that were in flight.
const options = {
  connectTimeout: 2000,
  commandTimeout: 12000, // above Keyway's hold time
  keepAlive: 30000,
  maxRetriesPerRequest: 20,
  retryStrategy: (times) => Math.min(50 * 2 ** times, 1000), // 100 ms .. 1 s
  reconnectOnError: (err) => err.message.startsWith('READONLY'), // never expected behind Keyway
  enableOfflineQueue: true,
};

function client() {
  if (process.env.REDIS_URL) {
    return new Redis(process.env.REDIS_URL, options);
  }
  const file = process.env.REDIS_PASSWORD_FILE;
  const password = file ? fs.readFileSync(file, 'utf8').split(/\r?\n/)[0] : undefined;
  return new Redis({
    host: process.env.REDIS_HOST || '10.0.0.10',
    port: Number(process.env.REDIS_PORT || 6379),
    db: Number(process.env.REDIS_DB || 0),
    username: process.env.REDIS_USERNAME || undefined,
    password,
    ...options,
  });
}

async function main() {
  const redis = client();
  try {
    if ((await redis.ping()) !== 'PONG') throw new Error('PING');
    const key = `keyway:example:nodejs:${crypto.randomUUID()}`;
    if ((await redis.set(key, 'hello', 'EX', 60)) !== 'OK') throw new Error('SET');
    if ((await redis.get(key)) !== 'hello') throw new Error('GET');
    if ((await redis.del(key)) !== 1) throw new Error('DEL');
    const info = await redis.info('replication');
    if (!/^role:master\r?$/m.test(info)) throw new Error('INFO replication: not role:master');
    console.log('nodejs example: PING, SET/GET/DEL ok; role:master');
    console.log('OK');
  } finally {
    redis.disconnect();
  }
}

main().catch((err) => {
  console.error(`nodejs example: ${err.message}`);
  console.log('FAIL');
  process.exit(1);
});
