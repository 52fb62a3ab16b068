// The application's MongoDB user: readWrite on the mailintake database, nothing else.
// Run once by the mongo image at first start (compose), or by hand against an existing
// store:  MONGO_APP_PASSWORD=... mongosh -u root -p ... --authenticationDatabase admin app-user.js
const name = process.env.MONGO_APP_USER || "mailintake";
const database = process.env.MONGO_APP_DATABASE || "mailintake";
const password = process.env.MONGO_APP_PASSWORD;
if (!password) {
  throw new Error("MONGO_APP_PASSWORD is not set");
}
const db_ = db.getSiblingDB(database);
if (db_.getUser(name) === null) {
  db_.createUser({ user: name, pwd: password, roles: [{ role: "readWrite", db: database }] });
} else {
  db_.updateUser(name, { pwd: password, roles: [{ role: "readWrite", db: database }] });
}
