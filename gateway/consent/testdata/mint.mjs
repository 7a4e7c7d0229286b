// Mints (or, with --verify, verifies) a jisr consent token with the npm
// `jose` package: an implementation independent of the Go code under test.
import * as jose from 'jose';

const [, , a, b, c] = process.argv;
if (a === '--verify') {
  const key = await jose.importJWK(JSON.parse(b), 'EdDSA');
  const { payload } = await jose.jwtVerify(c, key, { algorithms: ['EdDSA'] });
  if (!payload.authorization_details || payload.authorization_details[0].type !== 'jisr_query') {
    throw new Error('not a jisr consent token');
  }
  console.log('ok');
} else {
  const jwk = JSON.parse(a);
  const key = await jose.importJWK(jwk, 'EdDSA');
  const token = await new jose.SignJWT(JSON.parse(b))
    .setProtectedHeader({ alg: 'EdDSA', kid: jwk.kid, typ: 'JWT' })
    .setIssuedAt()
    .setNotBefore('0s')
    .setExpirationTime('10m')
    .sign(key);
  console.log(token);
}
